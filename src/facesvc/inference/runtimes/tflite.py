"""A thin wrapper over TensorFlow's TFLite interpreter (CPU only; one per runner thread)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _make_interpreter(**kwargs: Any) -> Any:
    """LiteRT's interpreter when installed (TF's successor), else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(**kwargs)
    except ImportError:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        with warnings.catch_warnings():
            # TF 2.20+ warns that tf.lite moves to ai-edge-litert; it behaves the same here.
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(**kwargs)


class TFLiteModel:
    def __init__(self, path: Path, threads: int = 0) -> None:
        kwargs: dict[str, Any] = {"model_path": str(path)}
        if threads > 0:
            kwargs["num_threads"] = threads
        self._interpreter = _make_interpreter(**kwargs)
        self._interpreter.allocate_tensors()
        self.inputs = self._interpreter.get_input_details()
        self.outputs = self._interpreter.get_output_details()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inputs[0]["shape"])

    def resize_batch(self, batch: int) -> None:
        """Make the first input take ``batch`` items (reallocates only when it changes)."""
        shape = list(self.inputs[0]["shape"])
        if shape[0] == batch:
            return
        shape[0] = batch
        self._interpreter.resize_tensor_input(self.inputs[0]["index"], shape)
        self._interpreter.allocate_tensors()
        self.inputs = self._interpreter.get_input_details()
        self.outputs = self._interpreter.get_output_details()

    def output_by_last_dim(self, last_dim: int) -> int:
        """Index of the first output whose last dimension is ``last_dim``."""
        for detail in self.outputs:
            if int(detail["shape"][-1]) == last_dim:
                return int(detail["index"])
        raise ValueError(f"model has no output with last dimension {last_dim}")

    def __call__(self, tensor: np.ndarray) -> dict[int, np.ndarray]:
        """Run one input; returns every output by tensor index (copies, safe to keep)."""
        self._interpreter.set_tensor(self.inputs[0]["index"], tensor)
        self._interpreter.invoke()
        return {
            int(d["index"]): np.array(self._interpreter.get_tensor(d["index"]))
            for d in self.outputs
        }
