"""LFW verification: 10-fold protocol on pairs.txt, threshold chosen on 9 folds, tested on 1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesvc.inference.pipeline import FacePipeline


@dataclass(frozen=True)
class Pair:
    fold: int
    a: str  # path relative to the LFW image folder
    b: str
    same: bool


def lfw_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    lines = path.read_text(encoding="utf-8").split("\n")
    folds, per_fold = (int(v) for v in lines[0].split())
    pairs: list[Pair] = []
    rows = [line.split() for line in lines[1:] if line.strip()]
    for index, row in enumerate(rows[: folds * per_fold * 2]):
        fold = index // (per_fold * 2)
        if len(row) == 3:
            pairs.append(
                Pair(fold, lfw_path(row[0], int(row[1])), lfw_path(row[0], int(row[2])), True)
            )
        else:
            pairs.append(
                Pair(fold, lfw_path(row[0], int(row[1])), lfw_path(row[2], int(row[3])), False)
            )
    return pairs


async def embed_centre_face(pipeline: FacePipeline, path: Path) -> np.ndarray | None:
    """Embedding of the face nearest the image centre (LFW's labelled person), or None."""
    image = await pipeline.decode(await asyncio.to_thread(path.read_bytes))
    detections = await pipeline.detect(image)
    if not detections:
        return None
    cy, cx = image.shape[0] / 2.0, image.shape[1] / 2.0
    centre = min(
        detections, key=lambda d: (d.box.center[0] - cx) ** 2 + (d.box.center[1] - cy) ** 2
    )
    faces = await pipeline.landmarks(image, [centre])
    (face,) = await pipeline.embed(image, faces)
    return face.embedding


async def embed_images(
    pipeline: FacePipeline,
    root: Path,
    names: Iterable[str],
    progress: Callable[[int], None] | None = None,
    concurrency: int = 4,
) -> dict[str, np.ndarray | None]:
    result: dict[str, np.ndarray | None] = {}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with semaphore:
            result[name] = await embed_centre_face(pipeline, root / name)
        if progress:
            progress(1)

    await asyncio.gather(*(one(n) for n in names))
    return result


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy (midpoint between neighbouring scores), and that accuracy."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate(
        [[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]]
    )
    best_t, best_acc = float(candidates[0]), -1.0
    for t in candidates:
        acc = float(np.mean((scores >= t) == same))
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return best_t, best_acc


def ten_fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, object]:
    """Standard protocol: per fold, threshold from the other folds, accuracy on this one."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        t, _ = best_threshold(scores[train], same[train])
        accuracies.append(float(np.mean((scores[test] >= t) == same[test])))
        thresholds.append(t)
    overall_t, _ = best_threshold(scores, same)
    return {
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "fold_thresholds": thresholds,
        "threshold": overall_t,
    }


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (probability a genuine pair outscores an impostor pair)."""
    # Mann-Whitney U with tied scores given their average rank
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    positives = int(same.sum())
    negatives = len(same) - positives
    return float((ranks[same].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at the threshold whose false-accept rate is at most ``far``."""
    impostors = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostors)))
    threshold = float(impostors[allowed]) + 1e-9 if allowed < len(impostors) else -1.0
    return float(np.mean(scores[same] >= threshold)), threshold


async def evaluate(
    pipeline: FacePipeline,
    data_dir: Path,
    folds: int = 10,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """The LFW protocol through the service's pipeline; failures to detect count as errors."""
    pairs = [p for p in read_pairs(data_dir / "lfw" / "pairs.txt") if p.fold < folds]
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    embeddings = await embed_images(
        pipeline, data_dir / "lfw" / "lfw-deepfunneled", names, progress
    )
    scores = np.array(
        [
            -1.0
            if embeddings[p.a] is None or embeddings[p.b] is None
            else float(embeddings[p.a] @ embeddings[p.b])  # type: ignore[operator]
            for p in pairs
        ]
    )
    same = np.array([p.same for p in pairs])
    result = ten_fold(scores, same, np.array([p.fold for p in pairs]))
    result.update(
        pairs=len(pairs),
        images=len(names),
        failures_to_detect=sum(v is None for v in embeddings.values()),
        roc_auc=roc_auc(scores, same),
    )
    for far in (1e-2, 1e-3):
        tar, threshold = tar_at_far(scores, same, far)
        result[f"tar_at_far_{far:g}"] = tar
        result[f"threshold_at_far_{far:g}"] = threshold
    return result
