"""ONNX Runtime as a CPU runtime for single-input, single-output ONNX graphs (the age and
gender networks), with the same call shape as ``TFLiteModel``: a tensor in, an array out.

One session per runner thread; its intra-op pool has ``threads`` threads (set explicitly, as
ONNX Runtime otherwise takes every core) and no inter-op pool, since these graphs are a
single chain of ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class OnnxModel:
    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session: Any = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        (entry,) = self._session.get_inputs()
        (result,) = self._session.get_outputs()
        self.input_name: str = entry.name
        self.output_name: str = result.name
        self.input_shape: tuple[int | str, ...] = tuple(entry.shape)
        self.output_shape: tuple[int | str, ...] = tuple(result.shape)

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        (output,) = self._session.run([self.output_name], {self.input_name: tensor})
        return np.asarray(output)
