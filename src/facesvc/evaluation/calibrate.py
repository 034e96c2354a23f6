"""Score calibration from every pair of LFW images (``facesvc eval calibrate``).

Every image of LFW is embedded through the service's pipeline (face nearest the centre, the
shared embedding cache), then every pair of images with a face is scored: pairs of one person
are genuine, pairs of two people are impostors (about 8.7e7 of them, enough to measure FAR
down to ~1e-7). Scores go straight into fine histograms, a block of rows at a time, so memory
stays at one (rows x images) matrix. The histograms make a ``ScoreCalibration``.

LFW files some people under two names and some photos under the wrong person: they are the
highest-scoring "impostor" pairs (several are the very same photo under two names, 0.96-0.99)
and would set the FAR 1e-7 threshold. The ones checked by eye are relabelled first
(``LFW_SAME_PERSON``, ``LFW_SAME_NAME``), so their pairs count as genuine. More remain (LFW
has no complete errata): rates below ~1e-6 are upper bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from facesvc.evaluation.cache import embedding_progress, pipeline_keys
from facesvc.evaluation.curves import save_figure
from facesvc.evaluation.identify import LFW_DISTRACTOR_TRUE_IDENTITY, lfw_images
from facesvc.evaluation.lfw import EmbeddedImages, embed_faces, manifest_threshold
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import describe, display_path
from facesvc.inference.calibration import (
    BIN_WIDTH,
    BINS,
    ScoreCalibration,
    ScoreHistogram,
    bin_indices,
    per_comparison_far,
)
from facesvc.inference.pipeline import FacePipeline

# image -> the person it shows (checked by eye against the other name's photos)
LFW_SAME_PERSON = {
    **LFW_DISTRACTOR_TRUE_IDENTITY,
    "Ricky_Ray/Ricky_Ray_0001.jpg": "Bart_Hendricks",  # the same photo under two names
    "Raul_Ibanez/Raul_Ibanez_0001.jpg": "Carlos_Beltran",  # the same photo
    "Gabrielle_Rose/Gabrielle_Rose_0001.jpg": "Martha_Bowen",  # = Martha_Bowen_0002
    "Eva_Amurri/Eva_Amurri_0001.jpg": "Emmy_Rossum",  # the same photo
    "Andrew_Gilligan/Andrew_Gilligan_0001.jpg": "Andrew_Caldecott",  # the same photo
    "Morgan_Hentzen/Morgan_Hentzen_0001.jpg": "Claire_Hentzen",
    "Shavon_Earp/Shavon_Earp_0001.jpg": "Diana_Taurasi",
    "Anja_Paerson/Anja_Paerson_0001.jpg": "Janica_Kostelic",
    "John_Burnett/John_Burnett_0001.jpg": "John_Barnett",
}
# folder -> the folder of the same person under another spelling
LFW_SAME_NAME = {
    "Noer_Muis": "Noer_Moeis",
    "Dai_Chul_Chyung": "Chyung_Dai-chul",
    "Prince_Felipe": "Felipe_De_Borbon",
    "Sepp_Blatter": "Joseph_Blatter",
}

SUMMARY_FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
GALLERY_SIZES = (100, 1_000, 10_000, 100_000)
IDENTIFICATION_FAR = 0.01


@dataclass(frozen=True)
class ScoredPair:
    a: int  # index into the image list
    b: int
    score: float


@dataclass
class PairHistograms:
    """Genuine and impostor score histograms over all pairs, and the highest impostor pairs."""

    genuine: ScoreHistogram = field(default_factory=ScoreHistogram)
    impostor: ScoreHistogram = field(default_factory=ScoreHistogram)
    top_impostors: list[ScoredPair] = field(default_factory=list)


def image_labels(
    images: Sequence[str],
    corrections: Mapping[str, str] = LFW_SAME_PERSON,
    aliases: Mapping[str, str] = LFW_SAME_NAME,
) -> list[str]:
    """The person in each LFW image (``Name/Name_0001.jpg``): ``corrections`` per image,
    then ``aliases`` per name."""
    labels = [corrections.get(image, image.split("/", 1)[0]) for image in images]
    return [aliases.get(label, label) for label in labels]


def all_pair_histograms(
    embeddings: np.ndarray,
    labels: Sequence[str],
    progress: Callable[[int], None] | None = None,
    *,
    rows: int = 512,
    keep_top: int = 25,
) -> PairHistograms:
    """Histograms of the scores of every unordered pair (i < j) of the (n, d) normalised
    ``embeddings``: genuine when the labels agree. ``progress`` hears of each block's pairs."""
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    count = len(matrix)
    out = PairHistograms()
    top: list[ScoredPair] = []
    cutoff = -np.inf
    for start in range(0, count, rows):
        stop = min(start + rows, count)
        # this block's rows against every image from the block on: pairs (i, j) with j > i
        scores = matrix[start:stop] @ matrix[start:].T
        local = np.arange(stop - start)[:, None]
        upper = np.arange(count - start)[None, :] > local
        same = codes[start:stop, None] == codes[None, start:]
        index = bin_indices(scores)
        index[~upper] = BINS  # skipped by add_bins
        out.impostor.add_bins(np.where(same, BINS, index))
        out.genuine.add_bins(index[same & upper])
        candidates = np.argwhere(upper & ~same & (scores >= cutoff))
        if len(candidates):
            values = scores[candidates[:, 0], candidates[:, 1]]
            best = np.argsort(-values)[:keep_top]
            top.extend(
                ScoredPair(int(start + r), int(start + c), float(v))
                for (r, c), v in zip(candidates[best], values[best], strict=True)
            )
            top = sorted(top, key=lambda p: -p.score)[:keep_top]
            if len(top) == keep_top:
                cutoff = top[-1].score
        if progress:
            progress(int(upper.sum()))
    out.top_impostors = top
    return out


def pair_count(images: int) -> int:
    return images * (images - 1) // 2


@dataclass
class CalibrationRun:
    calibration: ScoreCalibration
    histograms: PairHistograms
    images: list[str]  # images with a face, in the order of the histograms' indices
    failures: list[str]
    report: dict[str, Any]


def calibrate_embedded(
    embedded: EmbeddedImages,
    names: Sequence[str],
    progress: Callable[[int], None] | None = None,
    *,
    space: str,
    provenance: Mapping[str, Any] | None = None,
) -> CalibrationRun:
    """Score all pairs of the embedded LFW ``names`` (those with a face) and calibrate.

    ``progress`` hears of the pairs scored (``pair_count`` of the images with a face)."""
    vectors = embedded.embeddings
    kept = [name for name in names if vectors[name] is not None]
    if len(kept) < 2:
        raise ValueError("fewer than two images with a face: nothing to calibrate")
    matrix = np.stack([cast(np.ndarray, vectors[name]) for name in kept])
    labels = image_labels(kept)
    histograms = all_pair_histograms(matrix, labels, progress)
    corrections = {image: person for image, person in LFW_SAME_PERSON.items() if image in kept}
    facts: dict[str, Any] = {
        "dataset": (
            "LFW deep-funneled, every image: all pairs of images with a face; genuine = same "
            "person, impostor = different people (known label errors relabelled)"
        ),
        "images": len(names),
        "images_with_face": len(kept),
        "failures_to_detect": len(embedded.failures),
        "people": len(set(labels)),
        "label_corrections": corrections,
        "name_aliases": dict(LFW_SAME_NAME),
        "logistic_fit": "Newton's method on the score histograms (bins of 1e-4), classes "
        "weighted equally",
        **dict(provenance or {}),
    }
    calibration = ScoreCalibration.from_histograms(
        histograms.genuine, histograms.impostor, space=space, provenance=facts
    )
    report = {**facts, "timing": embedded.timing()}
    return CalibrationRun(calibration, histograms, kept, embedded.failures, report)


def empirical_probability(histograms: PairHistograms, score: float, half: float = 0.01) -> float:
    """Share of genuine density among both (equal class weights) around ``score``."""
    edges = np.array([score - half, score + half])
    genuine = -np.diff(histograms.genuine.at_or_above(edges)) / max(histograms.genuine.total, 1)
    impostor = -np.diff(histograms.impostor.at_or_above(edges)) / max(histograms.impostor.total, 1)
    both = float(genuine[0] + impostor[0])
    return float(genuine[0]) / both if both > 0 else float("nan")


def _bin_edge_at_or_above(threshold: float) -> float:
    """The first histogram bin edge at or above ``threshold`` (where counts are exact)."""
    return float(np.ceil(round((threshold + 1.0) / BIN_WIDTH, 6)) * BIN_WIDTH - 1.0)


def calibration_summary(
    run: CalibrationRun,
    *,
    manifest_threshold: float | None,
    fars: Sequence[float] = SUMMARY_FARS,
    gallery_sizes: Sequence[int] = GALLERY_SIZES,
    identification_far: float = IDENTIFICATION_FAR,
) -> dict[str, Any]:
    """The figures for docs/eval/calibration.json: thresholds at FAR targets, identification
    thresholds by gallery size, the logistic fit, rates at the manifest threshold."""
    calibration, impostor = run.calibration, run.histograms.impostor

    def counted(threshold: float) -> int:
        edge = _bin_edge_at_or_above(threshold)
        return int(impostor.at_or_above(np.array([edge]))[0])

    at_far = []
    for far in fars:
        t = calibration.threshold_for_far(far)
        at_far.append(
            {
                "far": far,
                "threshold": round(t, 5),
                "tar": round(calibration.tar_at(t), 5),
                "impostor_pairs_at_or_above": counted(t),
                "resolved": far >= calibration.min_far,
            }
        )
    identification = []
    for size in gallery_sizes:
        t = calibration.identification_threshold(size, identification_far)
        far1 = per_comparison_far(identification_far, size)
        identification.append(
            {
                "gallery_faces": size,
                "far": identification_far,
                "per_comparison_far": far1,
                "threshold": round(t, 5),
                "tar": round(calibration.tar_at(t), 5),
                "impostor_pairs_at_or_above": counted(t),
                "resolved": far1 >= calibration.min_far,
            }
        )
    a, b = calibration.logistic_a, calibration.logistic_b
    checks = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    summary: dict[str, Any] = {
        "space": calibration.space,
        "n_genuine": calibration.n_genuine,
        "n_impostor": calibration.n_impostor,
        "min_far": calibration.min_far,
        "min_far_note": "FAR below one impostor pair in n_impostor is not measured: "
        "threshold_for_far clamps lower targets to min_far",
        "at_far": at_far,
        "identification_at_far": identification,
        "identification_note": "an unknown probe against N gallery faces is falsely matched with "
        "probability 1 - (1 - far1)^N (independent comparisons); threshold = "
        "threshold_for_far(1 - (1 - far)^(1/N))",
        "logistic": {
            "a": a,
            "b": b,
            "crossing": -b / a,
            "probability_at": {f"{s:.2f}": round(calibration.probability(s), 5) for s in checks},
            "empirical_probability_at": {
                f"{s:.2f}": round(empirical_probability(run.histograms, s), 5) for s in checks
            },
            "empirical_note": "genuine / (genuine + impostor) density in [s - 0.01, s + 0.01), "
            "classes weighted equally: what the fit should reproduce",
        },
    }
    if manifest_threshold is not None:
        t = manifest_threshold
        summary["at_manifest_threshold"] = {
            "threshold": t,
            "far": calibration.far_at(t),
            "tar": calibration.tar_at(t),
            "probability": calibration.probability(t),
            "false_match_rate_by_gallery_size": {
                str(size): calibration.expected_false_match_rate(t, size) for size in gallery_sizes
            },
        }
    summary["closest_impostor_pairs"] = [
        {"a": run.images[p.a], "b": run.images[p.b], "score": round(p.score, 4)}
        for p in run.histograms.top_impostors
    ]
    return summary


def plot_calibration(
    path: Path,
    calibration: ScoreCalibration,
    histograms: PairHistograms,
    *,
    manifest_threshold: float | None = None,
    title: str = "Score calibration",
) -> None:
    """Left: genuine and impostor score densities (log scale). Right: FAR (log) and TAR and
    P(same) against the threshold, with the FAR targets and identification thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    merge = 100  # fine bins of 1e-4 -> plotted bins of 0.01
    centres = ScoreHistogram.centres().reshape(-1, merge).mean(axis=1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.8, 4.8), dpi=110)
    try:
        for name, histogram, colour in (
            ("genuine", histograms.genuine, "tab:green"),
            ("impostor", histograms.impostor, "tab:red"),
        ):
            counts = histogram.counts.reshape(-1, merge).sum(axis=1)
            density = counts / max(histogram.total, 1) / (merge * 1e-4)
            shown = density > 0
            left.step(
                centres[shown],
                density[shown],
                where="mid",
                color=colour,
                label=f"{name} pairs ({histogram.total:,})",
            )
        left.set_yscale("log")
        left.set_xlim(-0.4, 1.0)
        left.set_xlabel("cosine similarity")
        left.set_ylabel("density (log)")
        right.set_xlim(0.0, 1.0)
        grid, far = calibration.thresholds, calibration.far
        shown = far > 0
        right.plot(grid[shown], far[shown], color="tab:red", label="FAR (impostor pairs passing)")
        right.axhline(calibration.min_far, color="tab:red", ls=":", lw=1)
        right.set_yscale("log")
        right.set_ylim(calibration.min_far / 3, 1.5)
        right.set_xlabel("threshold")
        right.set_ylabel("FAR (log)")
        twin = right.twinx()
        twin.plot(grid, calibration.tar, color="tab:green", label="TAR (genuine pairs passing)")
        twin.plot(
            grid,
            [calibration.probability(float(t)) for t in grid],
            color="tab:blue",
            ls="--",
            label="P(same), logistic fit",
        )
        twin.set_ylim(0.0, 1.02)
        twin.set_ylabel("TAR, probability")
        for far_target in (1e-3, 1e-5):
            t = calibration.threshold_for_far(far_target)
            for axis in (left, right):
                axis.axvline(t, color="grey", ls=":", lw=1)
            right.annotate(f" FAR {far_target:g}: {t:.3f}", (t, far_target), fontsize=7)
        for size in (10_000, 100_000):
            t = calibration.identification_threshold(size, IDENTIFICATION_FAR)
            right.plot([t], [calibration.far_at(t)], "s", color="tab:purple", ms=4)
            right.annotate(f" 1:N {size:,} at 1%: {t:.3f}", (t, calibration.far_at(t)), fontsize=7)
        if manifest_threshold is not None:
            for axis in (left, right):
                axis.axvline(manifest_threshold, color="black", ls="--", lw=1)
            left.annotate(
                f"threshold {manifest_threshold:.2f}",
                (manifest_threshold, left.get_ylim()[1]),
                fontsize=7,
                va="top",
            )
        left.legend(loc="lower center", fontsize=8)
        lines = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        labels = right.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
        right.legend(lines, labels, loc="lower left", fontsize=8)
        for axis in (left, right):
            axis.grid(True, which="major", alpha=0.3)
        save_figure(fig, path, title=title)
    finally:
        plt.close(fig)


# ---- facesvc eval calibrate ------------------------------------------------------------


async def evaluate_calibration(
    pipeline: FacePipeline,
    data_dir: Path,
    *,
    space: str,
    target: Path,
    plot: Path,
    cache_dir: Path | None,
    concurrency: int,
    command: str,
) -> dict[str, Any]:
    """Score calibration from all pairs of LFW images, saved to ``target`` (the file the
    service loads for embedding space ``space``); histograms and FAR/TAR plotted to ``plot``."""
    names = lfw_images(data_dir)
    with embedding_progress(pipeline, cache_dir, len(names)) as (cache, progress):
        embedded = await embed_faces(
            pipeline,
            data_dir / "lfw" / "lfw-deepfunneled",
            names,
            progress.advance,
            concurrency,
            cache=cache,
            skipped=progress.skip,
        )
    described = describe(pipeline, command)
    detector_key, embedder_key = pipeline_keys(pipeline)
    provenance = {
        "command": described["command"],
        "date": described["date"],
        "models": described["models"],
        "pipeline": {"detector": detector_key, "embedder": embedder_key},
    }
    pairs = pair_count(sum(embedded.faces[name].embedding is not None for name in names))
    with ProgressReporter("scoring all pairs", pairs) as progress:
        run = calibrate_embedded(
            embedded, names, progress.advance, space=space, provenance=provenance
        )
    threshold = manifest_threshold(pipeline)
    _plot_calibration(plot, run, threshold, described["models"])
    run.calibration.save(target)
    return {
        "calibration_file": display_path(target),
        "plot": plot.name,
        **calibration_summary(run, manifest_threshold=threshold),
        **{key: value for key, value in run.report.items() if key != "models"},
        **described,
    }


def _plot_calibration(
    plot: Path, run: CalibrationRun, threshold: float | None, models: dict[str, Any]
) -> None:
    plot_calibration(
        plot,
        run.calibration,
        run.histograms,
        manifest_threshold=threshold,
        title=(
            f"LFW all pairs ({run.calibration.n_genuine:,} genuine, "
            f"{run.calibration.n_impostor:,} impostor), {models['detector']} + "
            f"{models['embedder']}"
        ),
    )


def calibration_summary_line(result: dict[str, Any]) -> str:
    rows = {row["far"]: row for row in result["at_far"]}
    ident = {row["gallery_faces"]: row for row in result["identification_at_far"]}
    return (
        f"{result['n_genuine']:,} genuine and {result['n_impostor']:,} impostor pairs; threshold "
        f"{rows[1e-3]['threshold']:.4f} at FAR 1e-3, {rows[1e-4]['threshold']:.4f} at 1e-4, "
        f"{rows[1e-5]['threshold']:.4f} at 1e-5; 1:N at FAR 1% "
        + ", ".join(f"N={n:,}: {row['threshold']:.4f}" for n, row in ident.items())
        + f"; P(same) = 1/(1+exp(-({result['logistic']['a']:.2f} s "
        f"{result['logistic']['b']:+.2f})))"
    )
