"""FaceNet-style embedders: a frozen graph with ``input:0``, ``phase_train:0``, ``embeddings:0``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from facesvc.inference.graphs import load_frozen_graph

if TYPE_CHECKING:
    from facesvc.inference.runtimes.openvino import Precision as OpenVINOPrecision

Preprocessing = Literal["prewhiten", "fixed"]


def prewhiten(batch: np.ndarray) -> np.ndarray:
    """FaceNet's per-image standardisation: (x - mean) / max(std, 1/sqrt(size))."""
    x = batch.astype(np.float32)
    axes = (1, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    floor = np.float32(1.0 / np.sqrt(float(np.prod(x.shape[1:]))))
    whitened: np.ndarray = ((x - mean) / np.maximum(std, floor)).astype(np.float32)
    return whitened


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class FaceNetEmbedder:
    def __init__(
        self,
        path: Path,
        *,
        input_name: str = "input:0",
        output_name: str = "embeddings:0",
        phase_train_name: str | None = "phase_train:0",
        input_size: int = 160,
        preprocessing: Preprocessing = "prewhiten",
    ) -> None:
        import tensorflow as tf

        self._tf = tf
        self.placed_on: str | None = None
        names = [input_name] + ([phase_train_name] if phase_train_name else [])
        self._fn = load_frozen_graph(path, names, [output_name])
        self._phase_train = phase_train_name is not None
        self.input_size = input_size
        self.preprocessing = preprocessing
        self.dim = int(self.predict(np.zeros((1, input_size, input_size, 3), np.uint8)).shape[1])

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        if self.preprocessing == "prewhiten":
            return prewhiten(crops)
        return (crops.astype(np.float32) - 127.5) / 128.0

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB crops -> (N, dim) L2-normalised float32 embeddings."""
        tf = self._tf
        args = [tf.constant(self.preprocess(crops))]
        if self._phase_train:
            args.append(tf.constant(False))
        (embeddings,) = self._fn(*args)
        self.placed_on = str(embeddings.device)  # where the call really ran (/readyz)
        return l2_normalise(np.asarray(embeddings))


class TFLiteFaceNetEmbedder:
    """The same FaceNet as a TFLite model (XNNPACK): CPU only, about 2.5x faster per face
    than the TF graph here, and embeddings equal to it (cosine 1.0 on test crops).

    ``runtime_options`` go to ``_open``, which a subclass for another CPU runtime overrides."""

    def __init__(
        self,
        path: Path,
        *,
        input_size: int = 160,
        preprocessing: Preprocessing = "prewhiten",
        threads: int = 0,
        **runtime_options: Any,
    ) -> None:
        self.model = self._open(path, threads, **runtime_options)
        self.input_size = input_size
        self.preprocessing = preprocessing
        self.dim = int(self.predict(np.zeros((1, input_size, input_size, 3), np.uint8)).shape[1])

    def _open(self, path: Path, threads: int) -> Any:
        from facesvc.inference.runtimes.tflite import TFLiteModel

        return TFLiteModel(path, threads=threads)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        x = (
            prewhiten(crops)
            if self.preprocessing == "prewhiten"
            else ((crops.astype(np.float32) - 127.5) / 128.0)
        )
        self.model.resize_batch(len(x))
        (output,) = self.model(x).values()
        return l2_normalise(np.asarray(output).reshape(len(x), -1))


class OpenVINOFaceNetEmbedder(TFLiteFaceNetEmbedder):
    """The same FaceNet run by OpenVINO (fp32 or bf16 from the ``.tflite``; int8 from the
    IR package NNCF quantised at pull time), ``precision="bf16"`` among its options. Dynamic
    batch; CPU only here."""

    def _open(self, path: Path, threads: int, precision: OpenVINOPrecision = "f32") -> Any:
        from facesvc.inference.runtimes.openvino import OpenVINOModel

        return OpenVINOModel(path, threads=threads, precision=precision)
