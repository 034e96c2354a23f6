"""TensorFlow device set-up: done once per process, before any model is loaded."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
_configured = False


class DeviceError(RuntimeError):
    pass


def configure_tensorflow(device: str, threads: int = 0) -> str:
    """Prepare TF for ``device`` ('cpu' or 'gpu:N'); returns the tf.device string to use.

    GPUs get memory growth (so several workers can share a card) and an unavailable GPU is
    a clear start-up error rather than a silent fallback to the CPU.
    """
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    kind, _, index_text = device.partition(":")
    index = int(index_text or 0)
    if not _configured:
        if threads > 0:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised in this process
                log.debug("memory growth not set on %s", gpu.name)
        _configured = True
    if kind == "cpu":
        return "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        raise DeviceError(
            f"FACESVC_DEVICE={device} but TensorFlow sees {len(gpus)} GPU(s); "
            "use 'cpu' or a GPU build of TensorFlow with the CUDA libraries installed"
        )
    return f"/GPU:{index}"
