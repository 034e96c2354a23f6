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
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation.lfw import Pair, match_threshold, read_pairs
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import describe
from facesvc.evaluation.quality_analysis import plot_quality, quality_report
from facesvc.evaluation.quality_measure import (
    BLUR_SIGMAS,
    SIZE_LEVELS_PX,
    Measurement,
    PoseComparisons,
    QualityRun,
    Samples,
    blurred,
    downscale_to_face,
    load_rgb,
    measure,
)
from facesvc.inference.pipeline import FacePipeline


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


# ---- facesvc eval quality --------------------------------------------------------------


async def evaluate_quality(
    pipeline: FacePipeline,
    data_dir: Path,
    *,
    pairs_per_fold: int,
    pose_folds: int,
    target: float,
    output: Path,
    concurrency: int,
    command: str,
) -> dict[str, Any]:
    """Enrolment quality thresholds from LFW genuine pairs; beside ``output``: STEM.png (the
    curves, thresholds marked) and STEM.npz (every comparison)."""
    threshold = match_threshold(pipeline)
    total = images_to_measure(pairs_per_fold, pose_folds, data_dir)
    with ProgressReporter("measuring LFW faces", total) as progress:
        run = await run_quality(
            pipeline,
            data_dir,
            threshold,
            per_fold=pairs_per_fold,
            pose_folds=pose_folds,
            progress=progress.advance,
            concurrency=concurrency,
        )
    report = quality_report(run, target)
    models = describe(pipeline, command)
    plot, samples_file = output.with_suffix(".png"), output.with_suffix(".npz")
    _save_quality(plot, samples_file, run, report, models["models"], threshold, target)
    return {
        **report,
        "plot": plot.name,
        "samples_file": samples_file.name,
        "timing": {"seconds": round(run.seconds, 1), "photos_measured": total},
        **models,
    }


def _save_quality(
    plot: Path,
    samples_file: Path,
    run: QualityRun,
    report: dict[str, Any],
    models: dict[str, Any],
    threshold: float,
    target: float,
) -> None:
    plot_quality(
        plot,
        report,
        title=(
            f"Enrolment quality, {models['detector']} + {models['embedder']}: LFW genuine "
            f"pairs, TAR at cosine >= {threshold:g}; thresholds where TAR < {target:.0%}"
        ),
    )
    arrays: dict[str, Any] = {**run.samples.arrays(), **run.pose.arrays()}
    np.savez_compressed(samples_file, **arrays)


def quality_summary_line(result: dict[str, Any], target: float) -> str:
    chosen = result["thresholds"]
    return (
        f"face >= {chosen['min_face_size_px']:g} px, sharpness >= {chosen['min_sharpness']:g}, "
        f"|yaw| <= {chosen['max_yaw_deg']:g} deg, |pitch| <= {chosen['max_pitch_deg']:g} deg "
        f"(TAR at {result['match_threshold']:g} >= {target:g}); LFW originals rejected "
        f"{result['gate_on_lfw_originals']['rejected']:.2%}"
    )
