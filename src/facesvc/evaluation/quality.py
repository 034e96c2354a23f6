"""Choosing the enrolment quality gate from data: how genuine matches fail as faces get worse.

Three properties, each varied on its own, each against the true-accept rate (TAR) of LFW
genuine pairs at the service's match threshold:

- size: side ``b`` of a genuine pair downscaled (area averaging, not enlarged back: the
  pipeline sees a small face as a small photo would give it) so the face box's shorter side
  is 16..80 px; x = the face size ``assess_face`` measures on the small image.
- sharpness: side ``b`` Gaussian-blurred (sigma 1..6 px on LFW's ~110 px faces); x = the
  measured sharpness.
- pose: no synthetic turn is faithful, so real LFW faces: every genuine pair of the chosen
  folds, each of its two photos in turn taken as the enrolled one, grouped in 5-degree bins of
  the enrolled photo's |yaw| (and, separately, |pitch|) measured from its five points.

Rule: walking from good to bad, the threshold is where TAR first falls below the target
(95%). For size and sharpness (levels of one degradation), it is interpolated between the
last level above and the first below, on a log scale of the measured medians; for pose, it is
the lower edge of the first bin (with at least ``MIN_BIN_PAIRS`` comparisons) under the
target, or, if none is, the upper edge of the last such bin: we have no evidence beyond it.
Thresholds are rounded the safe way (size and sharpness up, angles down).

Side ``a`` is always the undegraded photo: a degraded enrolment is compared with a normal
probe. A degraded face the detector no longer finds is counted apart (the service answers
"no face" there, the gate never sees it); TAR is over the faces found.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facesvc.evaluation.curves import save_figure
from facesvc.evaluation.lfw import Pair, nearest_centre, read_pairs, roc_auc
from facesvc.inference.images import decode_image
from facesvc.inference.landmarks.signals import head_pose
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.quality import (
    PITCH_GAIN,
    PITCH_NEUTRAL,
    SHARPNESS_SIZE,
    YAW_GAIN,
    FaceQuality,
    QualityThresholds,
    assess_face,
    sharpness,
)

SIZE_LEVELS_PX = (16, 20, 24, 28, 32, 40, 48, 64, 80)
BLUR_SIGMAS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
ANGLE_BIN_DEG = 5.0
MIN_BIN_PAIRS = 30
TAR_TARGET = 0.95
# Sharpness is also measured at these crop sizes, to show why SHARPNESS_SIZE was chosen.
SHARPNESS_SIZES_STUDIED = (16, 24, 32, 48, 64)
_MAX_PIXELS = 40_000_000  # LFW photos are 250 x 250


@dataclass(frozen=True)
class Measurement:
    """One photo through the pipeline: its centre face's embedding and quality."""

    embedding: np.ndarray
    quality: FaceQuality
    inter_ocular_px: float
    sharpness_at: tuple[float, ...]  # at SHARPNESS_SIZES_STUDIED
    mesh_yaw_deg: float = math.nan  # from the face mesh's 3-D eye line, for calibration
    mesh_pitch_deg: float = math.nan


async def measure(pipeline: FacePipeline, image: np.ndarray) -> Measurement | None:
    """The face nearest the centre (LFW's person), embedded and assessed; None: no face."""
    detections = await pipeline.detect(image)
    if not detections:
        return None
    centre = nearest_centre(detections, image.shape[1], image.shape[0])
    faces = await pipeline.landmarks(image, [centre], dense=True)
    (face,) = await pipeline.embed(image, faces)
    embedding = face.embedding
    if embedding is None:  # unreachable: embed sets it
        raise RuntimeError("the face was not embedded")

    def assess() -> Measurement:
        yaw, pitch = (math.nan, math.nan) if face.mesh is None else mesh_angles(face.mesh)
        points = face.points.astype(np.float64)
        return Measurement(
            embedding=embedding,
            quality=assess_face(image, face.box, face.points),
            inter_ocular_px=float(np.hypot(*(points[1] - points[0]))),
            sharpness_at=tuple(sharpness(image, face.box, s) for s in SHARPNESS_SIZES_STUDIED),
            mesh_yaw_deg=yaw,
            mesh_pitch_deg=pitch,
        )

    return await asyncio.to_thread(assess)


def mesh_angles(mesh: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from the mesh's 3-D points (``landmarks.signals.head_pose``)."""
    pose = head_pose(mesh)
    return pose.yaw, pose.pitch


def downscale_to_face(image: np.ndarray, face_px: float, target_px: float) -> np.ndarray | None:
    """The whole photo shrunk so its face (``face_px`` now) is ``target_px``; None if that is
    not smaller."""
    factor = target_px / face_px
    if factor >= 1.0:
        return None
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small: np.ndarray = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    out: np.ndarray = cv2.GaussianBlur(image, (0, 0), sigma)
    return out


def load_rgb(path: Path) -> np.ndarray:
    """The photo as the service decodes an upload (RGB, EXIF orientation applied)."""
    return decode_image(path.read_bytes(), max_pixels=_MAX_PIXELS)


@dataclass
class Samples:
    """Every comparison made: one row per degraded (or original) photo ``b`` of a pair."""

    kind: list[str] = field(default_factory=list)  # "original", "size", "blur"
    level: list[float] = field(default_factory=list)  # target px, sigma, or 0
    pair: list[int] = field(default_factory=list)
    found: list[bool] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)  # nan when not found
    face_size_px: list[float] = field(default_factory=list)
    inter_ocular_px: list[float] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    sharpness_at: list[tuple[float, ...]] = field(default_factory=list)
    yaw_deg: list[float] = field(default_factory=list)
    pitch_deg: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    def add(
        self, kind: str, level: float, pair: int, m: Measurement | None, ref: Measurement
    ) -> None:
        nan = math.nan
        self.kind.append(kind)
        self.level.append(level)
        self.pair.append(pair)
        self.found.append(m is not None)
        self.similarity.append(nan if m is None else float(m.embedding @ ref.embedding))
        q = None if m is None else m.quality
        self.face_size_px.append(nan if q is None else q.face_size_px)
        self.inter_ocular_px.append(nan if m is None else m.inter_ocular_px)
        self.sharpness.append(nan if q is None else q.sharpness)
        self.sharpness_at.append(
            (nan,) * len(SHARPNESS_SIZES_STUDIED) if m is None else m.sharpness_at
        )
        self.yaw_deg.append(nan if q is None else q.yaw_deg)
        self.pitch_deg.append(nan if q is None else q.pitch_deg)
        self.score.append(nan if q is None else q.score)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            name: np.asarray(getattr(self, name))
            for name in (
                "kind",
                "level",
                "pair",
                "found",
                "similarity",
                "face_size_px",
                "inter_ocular_px",
                "sharpness",
                "yaw_deg",
                "pitch_deg",
                "score",
            )
        }
        out["sharpness_at"] = np.asarray(self.sharpness_at, dtype=np.float64).reshape(
            -1, len(SHARPNESS_SIZES_STUDIED)
        )
        return out


@dataclass
class PoseComparisons:
    """Genuine comparisons of original photos, each pair twice (either photo enrolled)."""

    similarity: list[float] = field(default_factory=list)  # -1: a photo without a face
    enrolled_yaw_deg: list[float] = field(default_factory=list)
    enrolled_pitch_deg: list[float] = field(default_factory=list)
    enrolled_face_size_px: list[float] = field(default_factory=list)
    enrolled_inter_ocular_px: list[float] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"pose_{name}": np.asarray(values) for name, values in vars(self).items()}


def genuine_subsets(
    pairs: Sequence[Pair], per_fold: int, pose_folds: int
) -> tuple[list[Pair], list[Pair]]:
    """(pairs to degrade: the first ``per_fold`` genuine pairs of each fold, pairs for pose:
    every genuine pair of the first ``pose_folds`` folds)."""
    taken: dict[int, int] = {}
    degrade, pose = [], []
    for pair in pairs:
        if not pair.same:
            continue
        taken[pair.fold] = taken.get(pair.fold, 0) + 1
        if taken[pair.fold] <= per_fold:
            degrade.append(pair)
        if pair.fold < pose_folds:
            pose.append(pair)
    return degrade, pose


@dataclass
class QualityRun:
    samples: Samples
    pose: PoseComparisons
    originals: dict[str, Measurement | None]
    match_threshold: float
    seconds: float = 0.0


async def run_quality(
    pipeline: FacePipeline,
    data_dir: Path,
    match_threshold: float,
    *,
    per_fold: int = 20,
    pose_folds: int = 10,
    progress: Callable[[int], None] | None = None,
    concurrency: int = 4,
) -> QualityRun:
    """Measure the originals of the chosen genuine pairs, then every degraded photo."""
    root = data_dir / "lfw" / "lfw-deepfunneled"
    degrade, pose = genuine_subsets(
        read_pairs(data_dir / "lfw" / "pairs.txt"), per_fold, pose_folds
    )
    names = sorted({p.a for p in degrade + pose} | {p.b for p in degrade + pose})
    semaphore = asyncio.Semaphore(concurrency)
    originals: dict[str, Measurement | None] = {}
    start = time.perf_counter()
    if not pipeline.registry.ready:
        await pipeline.registry.start()

    async def run(make: Callable[[], np.ndarray | None]) -> tuple[bool, Measurement | None]:
        async with semaphore:
            image = await asyncio.to_thread(make)
            result = None if image is None else await measure(pipeline, image)
        if progress:
            progress(1)
        return image is not None, result

    async def original(name: str) -> None:
        _, originals[name] = await run(lambda: load_rgb(root / name))

    await asyncio.gather(*(original(n) for n in names))

    samples = Samples()
    jobs: list[tuple[str, float, int, asyncio.Future[tuple[bool, Measurement | None]]]] = []
    for index, pair in enumerate(degrade):
        ref, probe = originals[pair.a], originals[pair.b]
        if ref is None or probe is None:  # a photo without a face: nothing to degrade
            continue
        samples.add("original", 0.0, index, probe, ref)
        path, face_px = root / pair.b, probe.quality.face_size_px
        for target in SIZE_LEVELS_PX:
            make = _size_maker(path, face_px, target)
            jobs.append(("size", float(target), index, asyncio.ensure_future(run(make))))
        for sigma in BLUR_SIGMAS:
            make = _blur_maker(path, sigma)
            jobs.append(("blur", sigma, index, asyncio.ensure_future(run(make))))
    for kind, level, index, job in jobs:
        made, measured = await job
        ref = originals[degrade[index].a]
        if made and ref is not None:
            samples.add(kind, level, index, measured, ref)

    comparisons = PoseComparisons()
    for pair in pose:
        a, b = originals[pair.a], originals[pair.b]
        score = -1.0 if a is None or b is None else float(a.embedding @ b.embedding)
        for enrolled in (a, b):
            nan = math.nan
            comparisons.similarity.append(score)
            q = None if enrolled is None else enrolled.quality
            comparisons.enrolled_yaw_deg.append(nan if q is None else q.yaw_deg)
            comparisons.enrolled_pitch_deg.append(nan if q is None else q.pitch_deg)
            comparisons.enrolled_face_size_px.append(nan if q is None else q.face_size_px)
            comparisons.enrolled_inter_ocular_px.append(
                nan if enrolled is None else enrolled.inter_ocular_px
            )
    return QualityRun(samples, comparisons, originals, match_threshold, time.perf_counter() - start)


def _size_maker(path: Path, face_px: float, target: float) -> Callable[[], np.ndarray | None]:
    return lambda: downscale_to_face(load_rgb(path), face_px, target)


def _blur_maker(path: Path, sigma: float) -> Callable[[], np.ndarray | None]:
    return lambda: blurred(load_rgb(path), sigma)


def images_to_measure(per_fold: int, pose_folds: int, data_dir: Path) -> int:
    degrade, pose = genuine_subsets(
        read_pairs(data_dir / "lfw" / "pairs.txt"), per_fold, pose_folds
    )
    names = {p.a for p in degrade + pose} | {p.b for p in degrade + pose}
    return len(names) + len(degrade) * (len(SIZE_LEVELS_PX) + len(BLUR_SIGMAS))


# ---- analysis (pure: arrays in, figures out) -------------------------------------------


def level_curve(
    levels: np.ndarray,
    values: np.ndarray,
    similarity: np.ndarray,
    found: np.ndarray,
    threshold: float,
    order: Sequence[float],
) -> list[dict[str, Any]]:
    """Per degradation level (in ``order``, best first): photos, share found, TAR over the
    faces found, median similarity and median measured value."""
    rows = []
    for level in order:
        here = levels == level
        hit = here & found
        if not here.any():
            continue
        rows.append(
            {
                "level": float(level),
                "photos": int(here.sum()),
                "found": round(float(hit.sum() / here.sum()), 4),
                "tar": round(float(np.mean(similarity[hit] >= threshold)), 4) if hit.any() else 0.0,
                "similarity_median": round(float(np.median(similarity[hit])), 4)
                if hit.any()
                else None,
                "value_median": round(float(np.median(values[hit])), 4) if hit.any() else None,
            }
        )
    return rows


def crossing(curve: Sequence[dict[str, Any]], target: float) -> float | None:
    """The measured value where TAR first falls below ``target``, walking the curve from its
    best level: log-linear between the last level above and the first below. None if never."""
    for before, after in itertools.pairwise(curve):
        if after["tar"] >= target or after["value_median"] is None:
            continue
        if before["tar"] < target:  # already under at the best level: nothing to interpolate
            return float(before["value_median"])
        share = (before["tar"] - target) / (before["tar"] - after["tar"])
        lo, hi = math.log(after["value_median"]), math.log(before["value_median"])
        return math.exp(hi + share * (lo - hi))
    return None


def angle_curve(
    angles: np.ndarray, similarity: np.ndarray, threshold: float, bin_deg: float = ANGLE_BIN_DEG
) -> list[dict[str, Any]]:
    """Comparisons grouped by the enrolled photo's |angle|: count, TAR, median similarity."""
    magnitude = np.abs(angles)
    known = ~np.isnan(magnitude)
    top = float(np.nanmax(magnitude)) if known.any() else 0.0
    rows = []
    for lo in np.arange(0.0, top + bin_deg, bin_deg):
        here = known & (magnitude >= lo) & (magnitude < lo + bin_deg)
        if not here.any():
            continue
        rows.append(
            {
                "from_deg": float(lo),
                "to_deg": float(lo + bin_deg),
                "comparisons": int(here.sum()),
                "tar": round(float(np.mean(similarity[here] >= threshold)), 4),
                "similarity_median": round(float(np.median(similarity[here])), 4),
            }
        )
    return rows


def angle_threshold(
    curve: Sequence[dict[str, Any]], target: float, min_count: int = MIN_BIN_PAIRS
) -> tuple[float, str]:
    """The largest |angle| to accept and why (see the module's rule)."""
    last = 0.0
    for row in curve:
        if row["comparisons"] < min_count:
            return last, f"TAR >= {target:g} up to here; fewer than {min_count} comparisons beyond"
        if row["tar"] < target:
            return row["from_deg"], f"TAR {row['tar']:.4f} < {target:g} from here"
        last = row["to_deg"]
    return last, "TAR >= target in every bin"


def _ceil_significant(value: float, digits: int = 2) -> float:
    scale = 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)
    return math.ceil(value / scale) * scale


def _fit_gain(ratios: np.ndarray, mesh_deg: np.ndarray) -> float:
    """k in tan(angle) = k * ratio, least squares."""
    tangent = np.tan(np.radians(mesh_deg))
    return float(np.sum(ratios * tangent) / np.sum(ratios**2))


def pose_calibration(originals: Sequence[Measurement]) -> dict[str, Any]:
    """How the five-point angles compare with the mesh's 3-D ones, and the refitted constants
    (the ones in ``inference/quality.py`` are these, rounded, from the full run)."""
    rows = [m for m in originals if not math.isnan(m.mesh_yaw_deg)]
    if len(rows) < 10:
        return {"faces": len(rows)}
    yaw = np.array([m.quality.yaw_deg for m in rows])
    pitch = np.array([m.quality.pitch_deg for m in rows])
    mesh_yaw = np.array([m.mesh_yaw_deg for m in rows])
    mesh_pitch = np.array([m.mesh_pitch_deg for m in rows])
    yaw_ratio = np.tan(np.radians(yaw)) / YAW_GAIN  # back to the raw five-point ratios
    along = np.tan(np.radians(pitch)) / PITCH_GAIN + PITCH_NEUTRAL
    slope, intercept = np.polyfit(along, np.tan(np.radians(mesh_pitch)), 1)
    return {
        "faces": len(rows),
        "reference": "face mesh 3-D: depth slope of the eye line (yaw) and of the eyes-to-mouth "
        "line (pitch)",
        "yaw_gain": YAW_GAIN,
        "yaw_gain_refit": round(_fit_gain(yaw_ratio, mesh_yaw), 3),
        "yaw_rmse_deg": round(float(np.sqrt(np.mean((yaw - mesh_yaw) ** 2))), 2),
        "yaw_correlation": round(float(np.corrcoef(yaw, mesh_yaw)[0, 1]), 4),
        "pitch_gain": PITCH_GAIN,
        "pitch_neutral": PITCH_NEUTRAL,
        "pitch_gain_refit": round(float(slope), 3),
        "pitch_neutral_refit": round(float(-intercept / slope), 3),
        "pitch_rmse_deg": round(float(np.sqrt(np.mean((pitch - mesh_pitch) ** 2))), 2),
        "pitch_correlation": round(float(np.corrcoef(pitch, mesh_pitch)[0, 1]), 4),
    }


def _auc_of_success(values: np.ndarray, success: np.ndarray) -> float | None:
    keep = ~np.isnan(values)
    values, success = values[keep], success[keep]
    if success.all() or not success.any():
        return None
    return round(roc_auc(values, success), 4)


def quality_report(run: QualityRun, target: float = TAR_TARGET) -> dict[str, Any]:
    """Curves, chosen thresholds and the checks behind them (JSON-ready)."""
    s = run.samples.arrays()
    t = run.match_threshold
    kind, level, found, sim = s["kind"], s["level"], s["found"], s["similarity"]
    original = kind == "original"

    def curve(name: str, order: Sequence[float], values: np.ndarray) -> list[dict[str, Any]]:
        keep = original | (kind == name)
        return level_curve(level[keep], values[keep], sim[keep], found[keep], t, order)

    size_curve = curve("size", [0.0, *sorted(SIZE_LEVELS_PX, reverse=True)], s["face_size_px"])
    blur_curve = curve("blur", [0.0, *BLUR_SIGMAS], s["sharpness"])
    size_at = crossing(size_curve, target)
    sharp_at = crossing(blur_curve, target)

    pose = run.pose
    pose_sim = np.array(pose.similarity)
    yaw_curve = angle_curve(np.array(pose.enrolled_yaw_deg), pose_sim, t)
    pitch_curve = angle_curve(np.array(pose.enrolled_pitch_deg), pose_sim, t)
    yaw_at, yaw_why = angle_threshold(yaw_curve, target)
    pitch_at, pitch_why = angle_threshold(pitch_curve, target)

    chosen = QualityThresholds(
        min_face_size_px=float(math.ceil(size_at)) if size_at else 0.0,
        min_sharpness=_ceil_significant(sharp_at) if sharp_at else 0.0,
        max_yaw_deg=float(math.floor(yaw_at)),
        max_pitch_deg=float(math.floor(pitch_at)),
    )

    measured = [m for m in run.originals.values() if m is not None]
    gate_on_originals = {
        "photos": len(measured),
        "rejected": round(
            sum(chosen.problem(m.quality) is not None for m in measured) / max(len(measured), 1), 4
        ),
    }
    for problem in ("face-too-small", "face-too-blurry", "face-turned-away"):
        gate_on_originals[problem] = sum(chosen.problem(m.quality) == problem for m in measured)

    success = found & (sim >= t)
    size_rows = (kind == "size") | original
    blur_rows = (kind == "blur") | original
    sharp_at_sizes = s["sharpness_at"]
    sizes_study = []
    for column, crop in enumerate(SHARPNESS_SIZES_STUDIED):
        values = sharp_at_sizes[:, column]
        study_curve = curve("blur", [0.0, *BLUR_SIGMAS], values)
        at = crossing(study_curve, target)
        natural = np.array([m.sharpness_at[column] for m in measured])
        passing_size = (kind == "size") & found & (s["face_size_px"] >= chosen.min_face_size_px)
        sizes_study.append(
            {
                "crop_px": crop,
                "threshold": None if at is None else round(at, 2),
                "auc_blur_success": _auc_of_success(values[blur_rows], success[blur_rows]),
                "lfw_originals_rejected": None
                if at is None
                else round(float(np.mean(natural < at)), 4),
                "small_faces_passing_size_rejected": None
                if at is None
                else round(float(np.mean(values[passing_size] < at)), 4),
            }
        )

    scores = np.array(s["score"])
    return {
        "match_threshold": t,
        "tar_target": target,
        "rule": (
            "walking from good to bad, the threshold is where TAR of genuine pairs at the match "
            "threshold (over faces found) first falls below the target: size and sharpness "
            "interpolated on a log scale between the medians of the neighbouring degradation "
            f"levels, pose at a {ANGLE_BIN_DEG:g}-degree bin edge (bins of >= {MIN_BIN_PAIRS} "
            "comparisons); rounded up for size (px) and sharpness (2 significant digits), down "
            "for angles (whole degrees)"
        ),
        "thresholds": {
            "min_face_size_px": chosen.min_face_size_px,
            "min_sharpness": chosen.min_sharpness,
            "max_yaw_deg": chosen.max_yaw_deg,
            "max_pitch_deg": chosen.max_pitch_deg,
        },
        "unrounded": {
            "face_size_px": None if size_at is None else round(size_at, 2),
            "sharpness": None if sharp_at is None else round(sharp_at, 2),
            "yaw": yaw_why,
            "pitch": pitch_why,
        },
        "pairs": {
            "degraded": int(original.sum()),
            "pose_comparisons": len(pose_sim),
            "pose_pairs": len(pose_sim) // 2,
        },
        "size": {
            "degradation": "photo downscaled (INTER_AREA) so the face box's shorter side is "
            "the level (px); level 0: the original",
            "value": "face_size_px measured on the downscaled photo",
            "curve": size_curve,
            "auc_success": {
                "note": "how well each candidate measure of face size tells matches from "
                "misses (ROC AUC): on the downscaled photos, and on LFW's own photos (pose "
                "comparisons, by the enrolled photo's size)",
                "downscaled_box_shorter_side": _auc_of_success(
                    s["face_size_px"][size_rows], success[size_rows]
                ),
                "downscaled_inter_ocular": _auc_of_success(
                    s["inter_ocular_px"][size_rows], success[size_rows]
                ),
                "lfw_box_shorter_side": _auc_of_success(
                    np.array(pose.enrolled_face_size_px), pose_sim >= t
                ),
                "lfw_inter_ocular": _auc_of_success(
                    np.array(pose.enrolled_inter_ocular_px), pose_sim >= t
                ),
            },
        },
        "sharpness": {
            "degradation": "Gaussian blur, sigma = the level (px, on ~110 px faces); 0: original",
            "value": f"variance of the Laplacian of the grey face box at {SHARPNESS_SIZE} px",
            "curve": blur_curve,
            "crop_size_study": sizes_study,
        },
        "yaw": {"value": "|yaw| of the enrolled photo (degrees)", "curve": yaw_curve},
        "pitch": {"value": "|pitch| of the enrolled photo (degrees)", "curve": pitch_curve},
        "pose_calibration": pose_calibration(measured),
        "gate_on_lfw_originals": gate_on_originals,
        "score_auc_success": _auc_of_success(scores, success),
    }


def plot_quality(path: Path, report: dict[str, Any], *, title: str) -> None:
    """Four panels (size, sharpness, yaw, pitch): TAR against the measured value, the target
    as a dotted line and the chosen threshold as a red one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    target = report["tar_target"]
    chosen = report["thresholds"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=110)
    try:
        for ax, key, label, limit, ticks in (
            (
                axes[0, 0],
                "size",
                "face size (box's shorter side, px)",
                "min_face_size_px",
                (16, 20, 28, 40, 64, 100),
            ),
            (
                axes[0, 1],
                "sharpness",
                f"sharpness (var. of Laplacian at {SHARPNESS_SIZE} px)",
                "min_sharpness",
                (50, 100, 200, 500, 1000, 2000),
            ),
        ):
            rows = [r for r in report[key]["curve"] if r["value_median"] is not None]
            x = [r["value_median"] for r in rows]
            ax.plot(x, [r["tar"] for r in rows], "o-", color="tab:blue", label="TAR (faces found)")
            ax.plot(x, [r["found"] for r in rows], "s:", color="tab:grey", ms=3, label="found")
            for r in rows:
                tag = "orig" if r["level"] == 0 else f"{r['level']:g}"
                ax.annotate(
                    tag,
                    (r["value_median"], r["tar"]),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
            ax.set_xscale("log")
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"{label}; level beside each point")
            ax.axvline(chosen[limit], color="tab:red", lw=1.5, label=f"threshold {chosen[limit]:g}")
        for ax, key, limit in (
            (axes[1, 0], "yaw", "max_yaw_deg"),
            (axes[1, 1], "pitch", "max_pitch_deg"),
        ):
            rows = report[key]["curve"]
            centres = [(r["from_deg"] + r["to_deg"]) / 2 for r in rows]
            ax.plot(centres, [r["tar"] for r in rows], "-", color="tab:blue")
            thin = [r["comparisons"] < MIN_BIN_PAIRS for r in rows]
            for hollow, legend in ((False, "TAR"), (True, f"TAR, < {MIN_BIN_PAIRS} comparisons")):
                ax.plot(
                    [c for c, t in zip(centres, thin, strict=True) if t == hollow],
                    [r["tar"] for r, t in zip(rows, thin, strict=True) if t == hollow],
                    "o",
                    color="tab:blue",
                    mfc="white" if hollow else "tab:blue",
                    label=legend,
                )
            ax.plot(
                centres,
                [r["similarity_median"] for r in rows],
                "^--",
                color="tab:green",
                ms=4,
                label="median similarity",
            )
            for c, r in zip(centres, rows, strict=True):
                ax.annotate(
                    str(r["comparisons"]),
                    (c, r["tar"]),
                    fontsize=7,
                    xytext=(-4, 5),
                    textcoords="offset points",
                )
            ax.set_xlabel(f"|{key}| of the enrolled photo (degrees, 5-degree bins; n above)")
            ax.axvline(chosen[limit], color="tab:red", lw=1.5, label=f"threshold {chosen[limit]:g}")
        for ax in axes.flat:
            ax.axhline(target, color="grey", ls=":", lw=1)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(f"TAR at cosine >= {report['match_threshold']:g}; share; cosine")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
        save_figure(fig, path, title=title)
    finally:
        plt.close(fig)
