"""TensorFlow device set-up: done once per process, before any model is loaded."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
_configured = False


class DeviceError(RuntimeError):
    pass


def worker_index() -> int:
    """This worker's index among ``facesvc serve --workers N`` processes (0 when single).

    ``FACESVC_WORKER_INDEX`` wins; otherwise uvicorn's spawned workers are numbered by
    multiprocessing (1, 2, ...; a restarted worker gets the next number).
    """
    explicit = os.environ.get("FACESVC_WORKER_INDEX")
    if explicit is not None:
        return int(explicit)
    identity = multiprocessing.current_process()._identity
    return int(identity[0]) - 1 if identity else 0


def usable_cpu_count() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container's ``--cpus``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """cgroup v2 ``cpu.max`` ("quota period" or "max period"), else v1's quota/period."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        v1 = Path("/sys/fs/cgroup/cpu")
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period_us = int((v1 / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


@dataclass(frozen=True)
class WorkerPlan:
    """How one worker uses the machine: ``workers`` processes share ``cores``; each model
    runs ``threads`` threads, so workers x threads does not oversubscribe the cores."""

    workers: int
    threads: int
    cores: int


# More workers than this only on request: each loads TensorFlow and the models (about
# 0.8 GiB) and opens its own database pool.
DEFAULT_MAX_WORKERS = 8


def default_workers(device: str = "cpu", cores: int | None = None) -> int:
    """Workers `facesvc serve` starts when not told: one per usable core (at most
    ``DEFAULT_MAX_WORKERS``) on the CPU; one on a GPU (``--workers N`` for N GPUs: worker i
    takes GPU i mod n)."""
    if device.startswith("gpu"):
        return 1
    return min(cores or usable_cpu_count(), DEFAULT_MAX_WORKERS)


def worker_plan(
    workers: int = 0, threads: int = 0, cores: int | None = None, *, default: int = 1
) -> WorkerPlan:
    """``workers`` 0: ``default`` (1 for a process started any other way than `facesvc
    serve`, which passes ``default_workers()`` and exports the count to its workers);
    ``threads`` 0: the cores shared out among the workers (at least one each)."""
    cores = cores or usable_cpu_count()
    workers = workers or default
    return WorkerPlan(workers=workers, threads=threads or max(1, cores // workers), cores=cores)


def pick_device(device: str, count: int, worker: int) -> int:
    """The index of this process's device among ``count`` of its kind: ``kind:N`` pins N;
    ``kind`` alone spreads workers, worker i taking device i mod n. One rule for GPUs and
    for the CPU's logical devices (which tests use to check it without a GPU)."""
    kind, _, index_text = device.partition(":")
    index = int(index_text) if index_text else worker % max(count, 1)
    if index >= count:
        raise DeviceError(
            f"FACESVC_DEVICE={device} but TensorFlow sees {count} {kind.upper()}(s)"
            + (
                "; use 'cpu' or a GPU build of TensorFlow with the CUDA libraries installed"
                if kind == "gpu"
                else "; FACESVC_CPU_LOGICAL_DEVICES splits the CPU into more"
            )
        )
    return index


def configure_tensorflow(device: str, threads: int = 0, logical_cpus: int = 1) -> str:
    """Prepare TF for ``device`` ('cpu', 'cpu:N', 'gpu' or 'gpu:N'); returns the tf.device
    string the TensorFlow models of this worker run under ('/CPU:i' or '/GPU:i').

    Done once per process before a model is loaded: intra-op threads, the CPU split into
    ``logical_cpus`` logical devices, memory growth on every GPU (a worker takes only what
    it uses on the card it runs on). A device that is not there is a clear start-up error
    rather than a silent fallback to the CPU. TFLite models ignore this: CPU only.
    """
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    kind = "GPU" if device.startswith("gpu") else "CPU"
    if not _configured:
        try:
            if threads > 0:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            if logical_cpus > 1:
                (cpu,) = tf.config.list_physical_devices("CPU")[:1]
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus
                )
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # TF already initialised in this process (tests, CLI)
            log.debug("TensorFlow devices were already fixed in this process")
        _configured = True
    count = len(tf.config.list_logical_devices(kind))
    index = pick_device(device, count, worker_index())
    chosen = f"/{kind}:{index}"
    log.info(
        "TensorFlow models on %s (worker %d, FACESVC_DEVICE=%s, %d %s device(s))",
        chosen,
        worker_index(),
        device,
        count,
        kind,
    )
    return chosen
