"""LFW verification: 10-fold protocol on pairs.txt, threshold chosen on 9 folds, tested on 1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation import EvaluationError
from facesvc.evaluation.cache import CachedFace, EmbeddingCache, embedding_progress
from facesvc.evaluation.curves import CurveMark, plot_roc, score_summary
from facesvc.evaluation.provenance import describe
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.registry import ModelFileError
from facesvc.inference.types import Detection

# Score of a pair where either image has no face: the lowest cosine, so it counts as an error
# for a genuine pair (and as a correct rejection for an impostor pair) at any sane threshold.
FAILED_PAIR_SCORE = -1.0


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


def select_pairs(pairs: Sequence[Pair], folds: int = 10, limit: int | None = None) -> list[Pair]:
    """Pairs of the first ``folds`` folds; with ``limit``, the first ``limit`` pairs of each fold,
    half same and half different (a fold lists its same pairs first, so a plain prefix would
    hold no impostor pair)."""
    chosen = [p for p in pairs if p.fold < folds]
    if limit is None:
        return chosen
    quota = {True: (limit + 1) // 2, False: limit // 2}
    taken: dict[tuple[int, bool], int] = {}
    result = []
    for pair in chosen:
        key = (pair.fold, pair.same)
        if taken.get(key, 0) < quota[pair.same]:
            taken[key] = taken.get(key, 0) + 1
            result.append(pair)
    return result


def nearest_centre(detections: Sequence[Detection], width: int, height: int) -> Detection:
    """The detection whose box centre is nearest the image centre (LFW's labelled person)."""
    cx, cy = width / 2.0, height / 2.0
    return min(detections, key=lambda d: (d.box.center[0] - cx) ** 2 + (d.box.center[1] - cy) ** 2)


async def centre_face(pipeline: FacePipeline, path: Path) -> CachedFace:
    """The embedding of the face nearest the image centre (None: no face) and the face count."""
    image = await pipeline.decode(await asyncio.to_thread(path.read_bytes))
    detections = await pipeline.detect(image)
    if not detections:
        return CachedFace(None, 0)
    centre = nearest_centre(detections, image.shape[1], image.shape[0])
    faces = await pipeline.landmarks(image, [centre])
    (face,) = await pipeline.embed(image, faces)
    return CachedFace(face.embedding, len(detections))


async def embed_centre_face(pipeline: FacePipeline, path: Path) -> np.ndarray | None:
    """Embedding of the face nearest the image centre (LFW's labelled person), or None."""
    return (await centre_face(pipeline, path)).embedding


@dataclass
class EmbeddedImages:
    """Faces of a set of images (keyed by name relative to the root) and how they were had."""

    faces: dict[str, CachedFace] = field(default_factory=dict)
    cached: int = 0
    computed: int = 0
    seconds: float = 0.0  # wall time spent computing (not reading the cache)

    @property
    def embeddings(self) -> dict[str, np.ndarray | None]:
        return {name: face.embedding for name, face in self.faces.items()}

    @property
    def failures(self) -> list[str]:
        return sorted(name for name, face in self.faces.items() if face.embedding is None)

    def timing(self) -> dict[str, object]:
        return {
            "images_from_cache": self.cached,
            "images_computed": self.computed,
            "compute_seconds": round(self.seconds, 1),
            "ms_per_computed_image": (
                round(1000 * self.seconds / self.computed, 1) if self.computed else None
            ),
        }


async def embed_faces(
    pipeline: FacePipeline,
    root: Path,
    names: Iterable[str],
    progress: Callable[[int], None] | None = None,
    concurrency: int = 4,
    *,
    cache: EmbeddingCache | None = None,
    skipped: Callable[[int], None] | None = None,
) -> EmbeddedImages:
    """The centre face of every image, from ``cache`` when there, computed (and cached) if not.

    ``concurrency`` images are in flight at once, so the detector, mesh and embedder threads
    overlap and the runners can batch. ``progress`` hears of each image computed and
    ``skipped`` (default: ``progress``) of the cache hits, all at once.
    """
    names = list(dict.fromkeys(names))
    out = EmbeddedImages()
    if cache is not None:
        hits = cache.get_many(root / name for name in names)
        for name in names:
            if (hit := hits.get(root / name)) is not None:
                out.faces[name] = hit
        out.cached = len(out.faces)
        report = skipped or progress
        if report and out.cached:
            report(out.cached)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with semaphore:
            face = await centre_face(pipeline, root / name)
        out.faces[name] = face
        if cache is not None:
            cache.put(root / name, face)
        if progress:
            progress(1)

    todo = [name for name in names if name not in out.faces]
    start = time.perf_counter()
    if todo and not pipeline.registry.ready:  # callers may leave loading to us (cache hits)
        await pipeline.registry.start()
    try:
        await asyncio.gather(*(one(n) for n in todo))
    finally:
        if cache is not None:
            cache.flush()
    out.computed = len(todo)
    out.seconds = time.perf_counter() - start
    return out


async def embed_images(
    pipeline: FacePipeline,
    root: Path,
    names: Iterable[str],
    progress: Callable[[int], None] | None = None,
    concurrency: int = 4,
) -> dict[str, np.ndarray | None]:
    return (await embed_faces(pipeline, root, names, progress, concurrency)).embeddings


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


def pair_scores(pairs: Sequence[Pair], embeddings: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """Cosine of each pair's embeddings; ``FAILED_PAIR_SCORE`` when either image has no face."""
    scores = []
    for pair in pairs:
        a, b = embeddings[pair.a], embeddings[pair.b]
        scores.append(FAILED_PAIR_SCORE if a is None or b is None else float(a @ b))
    return np.array(scores, dtype=np.float64)


def rates_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, true-accept and false-accept rates when matching at ``score >= threshold``."""
    accept = scores >= threshold
    return {
        "threshold": threshold,
        "accuracy": float(np.mean(accept == same)),
        "tar": float(np.mean(accept[same])),
        "far": float(np.mean(accept[~same])),
    }


def verification_report(
    pairs: Sequence[Pair], scores: np.ndarray, manifest_threshold: float | None = None
) -> dict[str, object]:
    """The 10-fold figures plus what calibration needs later: score summaries, rates at the
    chosen and the manifest thresholds, and the pairs the chosen threshold gets wrong."""
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    result = ten_fold(scores, same, folds)
    result["pairs"] = len(pairs)
    result["roc_auc"] = roc_auc(scores, same)
    for far in (1e-2, 1e-3):
        tar, threshold = tar_at_far(scores, same, far)
        result[f"tar_at_far_{far:g}"] = tar
        result[f"threshold_at_far_{far:g}"] = threshold
    threshold = float(result["threshold"])  # type: ignore[arg-type]
    result["at_best_threshold"] = rates_at(scores, same, threshold)
    result["manifest_threshold"] = manifest_threshold
    result["at_manifest_threshold"] = (
        None if manifest_threshold is None else rates_at(scores, same, manifest_threshold)
    )
    result["scores"] = {
        "metric": "cosine similarity of L2-normalised embeddings; match when >= threshold",
        "failed_pair_score": FAILED_PAIR_SCORE,
        "genuine": score_summary(scores[same]),
        "impostor": score_summary(scores[~same]),
    }
    result["errors_at_best_threshold"] = [
        {"fold": p.fold, "a": p.a, "b": p.b, "same": p.same, "score": round(float(s), 4)}
        for p, s in zip(pairs, scores, strict=True)
        if (s >= threshold) != p.same
    ]
    return result


@dataclass
class LFWRun:
    """Everything one LFW evaluation produced: the JSON report and the per-pair arrays."""

    pairs: list[Pair]
    scores: np.ndarray
    embedded: EmbeddedImages
    result: dict[str, object]

    @property
    def same(self) -> np.ndarray:
        return np.array([p.same for p in self.pairs])

    @property
    def folds(self) -> np.ndarray:
        return np.array([p.fold for p in self.pairs], dtype=np.int8)


def manifest_threshold(pipeline: FacePipeline) -> float | None:
    """The threshold the service decides with (setting or manifest); None if uncalibrated."""
    try:
        return pipeline.registry.threshold
    except ModelFileError:  # an embedder without a calibrated threshold: nothing to compare
        return None


def match_threshold(pipeline: FacePipeline) -> float:
    """``manifest_threshold``, required: an embedder without one is an EvaluationError."""
    threshold = manifest_threshold(pipeline)
    if threshold is None:
        raise EvaluationError("the embedder has no match threshold (set FACESVC_MATCH_THRESHOLD)")
    return threshold


async def run_lfw(
    pipeline: FacePipeline,
    data_dir: Path,
    folds: int = 10,
    progress: Callable[[int], None] | None = None,
    *,
    limit: int | None = None,
    cache: EmbeddingCache | None = None,
    concurrency: int = 4,
    skipped: Callable[[int], None] | None = None,
) -> LFWRun:
    """The LFW protocol through the service's pipeline; failures to detect count as errors."""
    pairs = select_pairs(read_pairs(data_dir / "lfw" / "pairs.txt"), folds, limit)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    embedded = await embed_faces(
        pipeline,
        data_dir / "lfw" / "lfw-deepfunneled",
        names,
        progress,
        concurrency,
        cache=cache,
        skipped=skipped,
    )
    scores = pair_scores(pairs, embedded.embeddings)
    result = verification_report(pairs, scores, manifest_threshold(pipeline))
    failed = set(embedded.failures)
    result.update(
        folds=folds,
        limit_per_fold=limit,
        images=len(names),
        failures_to_detect=len(failed),
        failed_images=sorted(failed),
        pairs_with_failure=sum(p.a in failed or p.b in failed for p in pairs),
        timing=embedded.timing(),
    )
    return LFWRun(pairs=pairs, scores=scores, embedded=embedded, result=result)


async def evaluate(
    pipeline: FacePipeline,
    data_dir: Path,
    folds: int = 10,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """The LFW protocol through the service's pipeline; failures to detect count as errors."""
    return (await run_lfw(pipeline, data_dir, folds, progress)).result


# ---- facesvc eval lfw ------------------------------------------------------------------


async def evaluate_lfw(
    pipeline: FacePipeline,
    data_dir: Path,
    *,
    folds: int,
    limit: int | None,
    output: Path,
    cache_dir: Path | None,
    concurrency: int,
    command: str,
) -> dict[str, Any]:
    """LFW 10-fold verification; beside ``output``: STEM_roc.png and STEM_scores.npz."""
    pairs = select_pairs(read_pairs(data_dir / "lfw" / "pairs.txt"), folds, limit)
    total = len({p.a for p in pairs} | {p.b for p in pairs})
    with embedding_progress(pipeline, cache_dir, total) as (cache, progress):
        run = await run_lfw(
            pipeline,
            data_dir,
            folds,
            progress.advance,
            limit=limit,
            cache=cache,
            concurrency=concurrency,
            skipped=progress.skip,
        )
    plot = output.with_name(f"{output.stem}_roc.png")
    scores_file = output.with_name(f"{output.stem}_scores.npz")
    result: dict[str, Any] = run.result
    models = describe(pipeline, command)
    plot_roc(
        plot,
        run.scores,
        run.same,
        _roc_marks(run),
        title=(
            f"LFW {len(run.pairs)} pairs, {models['models']['detector']} + "
            f"{models['models']['embedder']}: accuracy {result['accuracy_mean']:.4f} "
            f"\u00b1 {result['accuracy_std']:.4f}, AUC {result['roc_auc']:.4f}"
        ),
    )
    _save_pair_scores(scores_file, run)
    return {
        **result,
        "roc_plot": plot.name,
        "scores_file": scores_file.name,
        "scores_file_note": "arrays scores, same, fold in pairs.txt order (after --folds "
        "and --limit), genuine and impostor; failed pairs score "
        f"{result['scores']['failed_pair_score']}",
        **models,
    }


def _roc_marks(run: LFWRun) -> list[CurveMark]:
    """TAR at FAR 1e-2 and 1e-3, the best threshold, and the manifest's when it differs."""
    result: dict[str, Any] = run.result
    same = run.same
    threshold = float(result["threshold"])
    chosen = rates_at(run.scores, same, threshold)
    marks = [
        CurveMark(
            f"TAR {result[f'tar_at_far_{far:g}']:.4f} at FAR {far:g}",
            far=float(np.mean(run.scores[~same] >= result[f"threshold_at_far_{far:g}"])),
            tar=float(result[f"tar_at_far_{far:g}"]),
        )
        for far in (1e-2, 1e-3)
    ]
    marks.append(
        CurveMark(
            f"best threshold {threshold:.3f}: TAR {chosen['tar']:.4f}, FAR {chosen['far']:.4f}",
            far=chosen["far"],
            tar=chosen["tar"],
        )
    )
    manifest = result.get("at_manifest_threshold")
    if isinstance(manifest, dict) and abs(manifest["threshold"] - threshold) > 5e-4:
        marks.append(
            CurveMark(
                f"manifest threshold {manifest['threshold']:.3f}: TAR {manifest['tar']:.4f}, "
                f"FAR {manifest['far']:.4f}",
                far=manifest["far"],
                tar=manifest["tar"],
            )
        )
    return marks


def _save_pair_scores(path: Path, run: LFWRun) -> None:
    same = run.same
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        scores=run.scores.astype(np.float32),
        same=same,
        fold=run.folds,
        genuine=run.scores[same].astype(np.float32),
        impostor=run.scores[~same].astype(np.float32),
    )


def lfw_summary_line(result: dict[str, Any]) -> str:
    return (
        f"accuracy {result['accuracy_mean']:.4f} +- {result['accuracy_std']:.4f}, "
        f"AUC {result['roc_auc']:.4f}, TAR {result['tar_at_far_0.01']:.4f} at FAR 1e-2, "
        f"{result['tar_at_far_0.001']:.4f} at FAR 1e-3, best threshold {result['threshold']:.4f}, "
        f"failures to detect {result['failures_to_detect']} of {result['images']}"
    )
