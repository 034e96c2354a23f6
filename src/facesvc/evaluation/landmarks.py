"""Five-point landmark error on the CUHK facial-point test set (``cuhk_5pt``).

``testImageList.txt``: ``path left right top bottom`` (the labelled face box) then five
points (x y each): left eye, right eye, nose, mouth left, mouth right, in image pixels, the
same order and sides as facesvc's ``FIVE_POINT_NAMES``. Each image has one labelled face; the
detection overlapping its box best is scored. The error of a face is the mean distance of the
five points to the labels divided by the distance between the two labelled eyes (NME).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation.boxes import best_overlap
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import describe
from facesvc.inference.cuhk import LandmarkSample
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.types import FIVE_POINT_NAMES

FAILURE_NME = 0.1


def point_errors(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-point distance divided by the labelled inter-ocular distance, shape (5,)."""
    inter_ocular = float(np.linalg.norm(truth[0] - truth[1]))
    if inter_ocular <= 0:
        raise ValueError("labelled eyes coincide: the inter-ocular distance is zero")
    return np.asarray(np.linalg.norm(predicted - truth, axis=1) / inter_ocular, dtype=np.float64)


def point_offsets(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Signed (dx, dy) of each point divided by the labelled inter-ocular distance, (5, 2)."""
    inter_ocular = float(np.linalg.norm(truth[0] - truth[1]))
    if inter_ocular <= 0:
        raise ValueError("labelled eyes coincide: the inter-ocular distance is zero")
    return np.asarray((predicted - truth) / inter_ocular, dtype=np.float64)


def nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean five-point error normalised by the inter-ocular distance."""
    return float(point_errors(predicted, truth).mean())


def summarise_errors(
    errors: np.ndarray, samples: int, misses: int, failure: float = FAILURE_NME
) -> dict[str, object]:
    """NME figures over faces found ((N, 5) per-point errors); misses count separately."""
    per_face = errors.mean(axis=1) if len(errors) else np.zeros(0)
    found = len(per_face)
    failed = int((per_face > failure).sum())
    return {
        "images": samples,
        "faces_scored": found,
        "detection_misses": misses,
        "nme_mean": float(per_face.mean()) if found else None,
        "nme_median": float(np.median(per_face)) if found else None,
        "failure_threshold": failure,
        "failure_rate": failed / found if found else None,
        "failure_rate_counting_misses": (failed + misses) / samples if samples else None,
        "per_point_mean": (
            {name: float(v) for name, v in zip(FIVE_POINT_NAMES, errors.mean(axis=0), strict=True)}
            if found
            else None
        ),
    }


async def run_landmarks(
    pipeline: FacePipeline,
    root: Path,
    samples: Sequence[LandmarkSample],
    progress: Callable[[int], None] | None = None,
    *,
    min_iou: float = 0.0,
    concurrency: int = 4,
) -> dict[str, object]:
    """Detect, keep the detection overlapping the labelled box most (a miss when no detection
    overlaps it by more than ``min_iou``), take its five points from ``pipeline.landmarks``."""
    errors: list[np.ndarray | None] = [None] * len(samples)
    offsets: list[np.ndarray] = []
    overlaps: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int, sample: LandmarkSample) -> None:
        async with semaphore:
            image = await pipeline.decode(await asyncio.to_thread((root / sample.image).read_bytes))
            detections = await pipeline.detect(image)
            chosen, overlap = best_overlap([d.box for d in detections], sample.box)
            if chosen >= 0 and overlap > min_iou:
                (face,) = await pipeline.landmarks(image, [detections[chosen]])
                points = face.points.astype(np.float64)
                errors[index] = point_errors(points, sample.points)
                offsets.append(point_offsets(points, sample.points))
                overlaps.append(overlap)
        if progress:
            progress(1)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, s) for i, s in enumerate(samples)))
    seconds = time.perf_counter() - start
    found = [e for e in errors if e is not None]
    matrix = np.stack(found) if found else np.zeros((0, 5))
    report = summarise_errors(matrix, len(samples), len(samples) - len(found))
    if offsets:  # a systematic offset (a different definition of the point) shows here
        bias = np.median(np.stack(offsets), axis=0)
        report["per_point_median_offset"] = {
            name: {"dx": round(float(dx), 4), "dy": round(float(dy), 4)}
            for name, (dx, dy) in zip(FIVE_POINT_NAMES, bias, strict=True)
        }
    report["min_iou"] = min_iou
    report["box_iou_median"] = float(np.median(overlaps)) if overlaps else None
    per_face = matrix.mean(axis=1) if found else np.zeros(0)
    worst = sorted(
        (float(e.mean()), s.image) for e, s in zip(errors, samples, strict=True) if e is not None
    )[-10:]
    report["worst"] = [{"image": image, "nme": round(value, 4)} for value, image in worst[::-1]]
    report["missed_images"] = [s.image for e, s in zip(errors, samples, strict=True) if e is None]
    report["nme_percentiles"] = (
        {
            f"p{q}": float(v)
            for q, v in zip((90, 95, 99), np.percentile(per_face, [90, 95, 99]), strict=True)
        }
        if found
        else None
    )
    report["seconds"] = round(seconds, 1)
    report["ms_per_image"] = round(1000 * seconds / len(samples), 1) if samples else None
    return report


# ---- facesvc eval landmarks ------------------------------------------------------------


async def evaluate_landmarks(
    pipeline: FacePipeline,
    root: Path,
    samples: Sequence[LandmarkSample],
    *,
    min_iou: float,
    concurrency: int,
    command: str,
) -> dict[str, Any]:
    """Five-point landmark error on cuhk_5pt (``root``)."""
    with ProgressReporter("cuhk_5pt landmarks", len(samples)) as progress:
        report = await run_landmarks(
            pipeline, root, samples, progress.advance, min_iou=min_iou, concurrency=concurrency
        )
    five_points = "detector" if pipeline.registry.detector_gives_five_points else "face mesh"
    return {**report, "five_points_from": five_points, **describe(pipeline, command)}


def landmarks_summary_line(result: dict[str, Any]) -> str:
    return (
        f"NME mean {result['nme_mean']:.4f}, median {result['nme_median']:.4f}, "
        f"failures (> {result['failure_threshold']}) {result['failure_rate']:.2%}, "
        f"detection misses {result['detection_misses']} of {result['images']}"
    )
