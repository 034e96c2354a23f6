"""Score calibration: what a cosine similarity means in error rates and probabilities.

A ``ScoreCalibration`` is measured once per embedding space (``facesvc eval calibrate``) and
loaded from JSON by the service. It holds, on a grid of thresholds, how many impostor and
genuine comparisons score at or above each threshold (so FAR and TAR at the grid points are
exact counts), and a logistic fit of P(same person | similarity) on balanced classes.

- ``far_at`` / ``tar_at`` interpolate between grid points: geometrically where both ends are
  positive (error rates fall roughly exponentially with the threshold), linearly to zero. Both
  are non-increasing in the threshold.
- ``threshold_for_far(far)`` is the smallest threshold whose FAR is at most ``far``. The data
  cannot resolve rates below one impostor pair in ``n_impostor`` (``min_far``): lower requests
  are clamped to ``min_far``, so check ``min_far`` before promising a rarer error.
- ``identification_threshold(N, far)``: an unknown probe searched against N gallery faces is
  falsely matched when any of its N impostor scores passes; with independent comparisons that
  happens with probability 1 - (1 - far1)^N, so the 1:1 rate per comparison must be
  far1 = 1 - (1 - far)^(1/N).

Pure numpy: no TensorFlow, nothing done at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = "facesvc-score-calibration/1"
METRIC = "cosine similarity of L2-normalised embeddings; match when >= threshold"

# Histogram bins used while counting pairs: [-1, 1) in steps of 1e-4. Grid steps are whole
# multiples of the bin width, so counts at grid thresholds are exact sums of bins.
SCORE_MIN = -1.0
SCORE_MAX = 1.0
BIN_WIDTH = 1e-4
BINS = round((SCORE_MAX - SCORE_MIN) / BIN_WIDTH)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def bin_indices(scores: npt.ArrayLike) -> IntArray:
    """The histogram bin of each score (scores outside [-1, 1) go to the end bins)."""
    values = np.asarray(scores, dtype=np.float64)
    index = np.floor((values - SCORE_MIN) / BIN_WIDTH).astype(np.int64)
    return np.clip(index, 0, BINS - 1)


class ScoreHistogram:
    """Counts of scores in fine bins over [-1, 1), filled in chunks (``add``/``add_bins``)."""

    def __init__(self) -> None:
        self.counts: IntArray = np.zeros(BINS, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, scores: npt.ArrayLike) -> None:
        self.add_bins(bin_indices(np.ravel(scores)))

    def add_bins(self, indices: npt.NDArray[np.integer[Any]]) -> None:
        """Count precomputed bin indices in [0, BINS); index BINS marks a value to skip."""
        self.counts += np.bincount(np.ravel(indices), minlength=BINS)[:BINS].astype(np.int64)

    @staticmethod
    def centres() -> FloatArray:
        return SCORE_MIN + (np.arange(BINS, dtype=np.float64) + 0.5) * BIN_WIDTH

    def at_or_above(self, thresholds: FloatArray) -> IntArray:
        """How many scores are >= each threshold (thresholds on bin edges)."""
        tail = np.concatenate([np.cumsum(self.counts[::-1])[::-1], [0]])
        edge = np.clip(np.rint((thresholds - SCORE_MIN) / BIN_WIDTH).astype(np.int64), 0, BINS)
        return tail[edge].astype(np.int64)


def fit_logistic(
    scores: FloatArray, positive: FloatArray, negative: FloatArray, iterations: int = 50
) -> tuple[float, float]:
    """(a, b) maximising the likelihood of P(positive | s) = 1 / (1 + exp(-(a s + b))).

    ``positive`` and ``negative`` are weights (e.g. histogram counts) at each score. The two
    classes are given equal total weight, so the fit is P(same) at a prior of one half.
    Newton's method with step halving (two parameters: the Hessian is 2x2).
    """
    pos = positive / positive.sum()
    neg = negative / negative.sum()
    keep = (pos > 0) | (neg > 0)
    s, pos, neg = scores[keep], pos[keep] / 2, neg[keep] / 2
    weight = pos + neg
    target = pos / weight

    def loss(a: float, b: float) -> float:
        z = a * s + b
        # -[y log sigma(z) + (1 - y) log(1 - sigma(z))] = log(1 + e^z) - y z
        return float(np.sum(weight * (np.logaddexp(0.0, z) - target * z)))

    a, b = 0.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * s + b)))  # sigma(z), overflow-free
        residual = weight * (p - target)
        gradient = np.array([np.sum(residual * s), np.sum(residual)])
        curvature = weight * p * (1.0 - p)
        cross = float(np.sum(curvature * s))
        hessian = np.array([[float(np.sum(curvature * s * s)), cross], [cross, curvature.sum()]])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        scale = 1.0
        while scale > 1e-6:
            trial = (a - scale * float(step[0]), b - scale * float(step[1]))
            value = loss(*trial)
            if value <= current:
                break
            scale /= 2
        else:
            break
        (a, b), improvement = trial, current - value
        current = value
        if improvement < 1e-15 and float(np.max(np.abs(scale * step))) < 1e-10:
            break
    return a, b


def _interpolate(x: FloatArray, grid: FloatArray, rate: FloatArray) -> FloatArray:
    """Non-increasing ``rate`` (known at ``grid``) at ``x``: geometric between two positive
    values, linear when one is zero; constant beyond the grid's ends."""
    x = np.clip(x, grid[0], grid[-1])
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)
    x0, x1, y0, y1 = grid[i], grid[i + 1], rate[i], rate[i + 1]
    w = (x - x0) / (x1 - x0)
    positive = (y0 > 0) & (y1 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = y0 * np.power(np.where(positive, y1 / y0, 1.0), w)
    return np.where(positive, geometric, y0 + w * (y1 - y0))


def _invert(target: float, grid: FloatArray, rate: FloatArray) -> float:
    """Smallest ``x`` with ``_interpolate(x) <= target`` (``rate`` non-increasing)."""
    below = np.flatnonzero(rate <= target)
    if len(below) == 0:
        return float(grid[-1])
    k = int(below[0])
    if k == 0:
        return float(grid[0])
    x0, x1, y0, y1 = float(grid[k - 1]), float(grid[k]), float(rate[k - 1]), float(rate[k])
    w = math.log(target / y0) / math.log(y1 / y0) if y1 > 0 else (target - y0) / (y1 - y0)
    x = x0 + max(0.0, min(1.0, w)) * (x1 - x0)
    # rounding may leave the rate a hair above the target: step up a few ulps (x1 is safe)
    for _ in range(16):
        if float(_interpolate(np.array([x]), grid, rate)[0]) <= target:
            return x
        x = float(np.nextafter(x, x1))
    return x1


def false_match_rate(far1: float, gallery_faces: int) -> float:
    """1 - (1 - far1)^N: one of N independent impostor comparisons passes."""
    if gallery_faces < 1:
        raise ValueError("gallery_faces must be at least 1")
    if far1 >= 1.0:
        return 1.0
    return -math.expm1(gallery_faces * math.log1p(-far1))


def per_comparison_far(far: float, gallery_faces: int) -> float:
    """The 1:1 FAR giving a false-match rate of ``far`` over N comparisons (inverse of
    ``false_match_rate``): 1 - (1 - far)^(1/N)."""
    if gallery_faces < 1:
        raise ValueError("gallery_faces must be at least 1")
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], not {far}")
    if far >= 1.0:
        return 1.0
    return -math.expm1(math.log1p(-far) / gallery_faces)


def _array(values: npt.ArrayLike, dtype: type[np.generic]) -> Any:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ScoreCalibration:
    """Error rates and match probability of similarity scores in one embedding space."""

    thresholds: FloatArray  # ascending grid
    impostor_at_or_above: IntArray  # impostor comparisons scoring >= each threshold
    genuine_at_or_above: IntArray
    n_impostor: int
    n_genuine: int
    logistic_a: float
    logistic_b: float
    space: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise the arrays of a frozen instance (read-only copies)
        set_(self, "thresholds", _array(self.thresholds, np.float64))
        set_(self, "impostor_at_or_above", _array(self.impostor_at_or_above, np.int64))
        set_(self, "genuine_at_or_above", _array(self.genuine_at_or_above, np.int64))
        grid = self.thresholds
        if grid.ndim != 1 or len(grid) < 2 or np.any(np.diff(grid) <= 0):
            raise ValueError("thresholds must be an ascending grid of at least two points")
        for name, counts, total in (
            ("impostor", self.impostor_at_or_above, self.n_impostor),
            ("genuine", self.genuine_at_or_above, self.n_genuine),
        ):
            if total < 1:
                raise ValueError(f"no {name} comparisons")
            if counts.shape != grid.shape:
                raise ValueError(f"{name} counts do not match the threshold grid")
            if np.any(np.diff(counts) > 0) or counts[0] > total or counts[-1] < 0:
                raise ValueError(f"{name} counts must fall from at most {total} with threshold")

    # -- building -------------------------------------------------------------------------

    @classmethod
    def from_histograms(
        cls,
        genuine: ScoreHistogram,
        impostor: ScoreHistogram,
        *,
        space: str,
        step: float = 0.001,
        provenance: Mapping[str, Any] | None = None,
    ) -> ScoreCalibration:
        """From score histograms (``ScoreHistogram``), on a grid over [-1, 1] of ``step``."""
        per_step = round(step / BIN_WIDTH)
        if per_step < 1 or not math.isclose(per_step * BIN_WIDTH, step):
            raise ValueError(f"step must be a multiple of {BIN_WIDTH}")
        grid = SCORE_MIN + np.arange(0, BINS + 1, per_step, dtype=np.float64) * BIN_WIDTH
        grid = np.round(grid, 10)
        centres = ScoreHistogram.centres()
        a, b = fit_logistic(
            centres, genuine.counts.astype(np.float64), impostor.counts.astype(np.float64)
        )
        return cls(
            thresholds=grid,
            impostor_at_or_above=impostor.at_or_above(grid),
            genuine_at_or_above=genuine.at_or_above(grid),
            n_impostor=impostor.total,
            n_genuine=genuine.total,
            logistic_a=a,
            logistic_b=b,
            space=space,
            provenance=dict(provenance or {}),
        )

    @classmethod
    def from_scores(
        cls,
        genuine: npt.ArrayLike,
        impostor: npt.ArrayLike,
        *,
        space: str,
        step: float = 0.001,
        provenance: Mapping[str, Any] | None = None,
    ) -> ScoreCalibration:
        """From raw genuine and impostor similarity scores."""
        genuine_histogram, impostor_histogram = ScoreHistogram(), ScoreHistogram()
        genuine_histogram.add(genuine)
        impostor_histogram.add(impostor)
        return cls.from_histograms(
            genuine_histogram, impostor_histogram, space=space, step=step, provenance=provenance
        )

    # -- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "space": self.space,
            "metric": METRIC,
            "n_genuine": self.n_genuine,
            "n_impostor": self.n_impostor,
            "min_far": self.min_far,
            "logistic": {
                "a": self.logistic_a,
                "b": self.logistic_b,
                "formula": "P(same) = 1 / (1 + exp(-(a * similarity + b))) at prior 0.5",
            },
            "provenance": self.provenance,
            "thresholds": [round(float(t), 6) for t in self.thresholds],
            "impostor_at_or_above": [int(c) for c in self.impostor_at_or_above],
            "genuine_at_or_above": [int(c) for c in self.genuine_at_or_above],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreCalibration:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a score calibration ({FORMAT}): format {data.get('format')!r}")
        return cls(
            thresholds=np.asarray(data["thresholds"], dtype=np.float64),
            impostor_at_or_above=np.asarray(data["impostor_at_or_above"], dtype=np.int64),
            genuine_at_or_above=np.asarray(data["genuine_at_or_above"], dtype=np.int64),
            n_impostor=int(data["n_impostor"]),
            n_genuine=int(data["n_genuine"]),
            logistic_a=float(data["logistic"]["a"]),
            logistic_b=float(data["logistic"]["b"]),
            space=str(data["space"]),
            provenance=dict(data.get("provenance", {})),
        )

    @classmethod
    def load(cls, path: Path) -> ScoreCalibration:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        """Write the JSON: indented, but each grid array on one line (2,001 numbers each)."""
        data = self.to_dict()
        arrays = ("thresholds", "impostor_at_or_above", "genuine_at_or_above")
        head = json.dumps({k: v for k, v in data.items() if k not in arrays}, indent=1)
        tail = ",\n".join(f' "{k}": {json.dumps(data[k], separators=(",", ":"))}' for k in arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{head[:-2]},\n{tail}\n}}\n", encoding="utf-8")

    # -- rates ----------------------------------------------------------------------------

    @property
    def far(self) -> FloatArray:
        """FAR at each grid threshold: share of impostor comparisons accepted."""
        return self.impostor_at_or_above / float(self.n_impostor)

    @property
    def tar(self) -> FloatArray:
        """TAR at each grid threshold: share of genuine comparisons accepted."""
        return self.genuine_at_or_above / float(self.n_genuine)

    @property
    def min_far(self) -> float:
        """The lowest FAR the data resolves (one impostor comparison)."""
        return 1.0 / self.n_impostor

    def far_at(self, threshold: float) -> float:
        """False-accept rate of one comparison at ``threshold`` (interpolated, non-increasing)."""
        return float(_interpolate(np.array([threshold], np.float64), self.thresholds, self.far)[0])

    def tar_at(self, threshold: float) -> float:
        """True-accept rate of one genuine comparison at ``threshold`` (interpolated)."""
        return float(_interpolate(np.array([threshold], np.float64), self.thresholds, self.tar)[0])

    def threshold_for_far(self, far: float) -> float:
        """Smallest threshold whose FAR is at most ``far``; ``far`` below ``min_far`` is
        clamped to ``min_far`` (the data holds no rarer event)."""
        if math.isnan(far) or far < 0:
            raise ValueError(f"far must be a rate >= 0, not {far}")
        return _invert(max(far, self.min_far), self.thresholds, self.far)

    def probability(self, similarity: float, prior: float = 0.5) -> float:
        """P(same person | similarity) from the logistic fit; ``prior`` is the share of
        comparisons that are genuine (0.5: the balanced data it was fitted on)."""
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), not {prior}")
        z = self.logistic_a * similarity + self.logistic_b + math.log(prior / (1.0 - prior))
        return 0.5 * (1.0 + math.tanh(0.5 * z))

    def identification_threshold(self, gallery_faces: int, far: float) -> float:
        """Threshold at which an unknown probe searched against ``gallery_faces`` faces is
        falsely matched with probability at most ``far`` (comparisons taken as independent)."""
        return self.threshold_for_far(per_comparison_far(far, gallery_faces))

    def expected_false_match_rate(self, threshold: float, gallery_faces: int = 1) -> float:
        """Predicted probability that an unknown probe matches one of ``gallery_faces`` faces
        at ``threshold`` (the 1:1 FAR when ``gallery_faces`` is 1)."""
        return false_match_rate(self.far_at(threshold), gallery_faces)
