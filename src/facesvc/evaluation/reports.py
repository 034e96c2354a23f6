"""One report per ``facesvc eval`` command: run the evaluation through the service's pipeline,
write its plots and raw arrays beside the report, and return the report (a JSON document) with
what produced it. ``*_summary_line`` turns a report into the command's one line.

Every function takes the command line that reproduces the run (``command``); an input the
evaluation cannot use raises EvaluationError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation.attributes import AttributeSample, attributes_report, predict_all
from facesvc.evaluation.lfw import (
    match_threshold,
)
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import cpu_description, describe, display_path
from facesvc.evaluation.quality import images_to_measure, run_quality
from facesvc.evaluation.quality_analysis import plot_quality, quality_report
from facesvc.evaluation.quality_measure import QualityRun
from facesvc.inference.pipeline import FacePipeline

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


# ---- facesvc eval attributes -----------------------------------------------------------


async def evaluate_attributes(
    pipeline: FacePipeline,
    root: Path,
    samples: Sequence[AttributeSample],
    *,
    labels_file: Path,
    limit: int | None,
    command: str,
) -> dict[str, Any]:
    """Age, gender and expression of labelled LFW photos (``root``: the LFW folder)."""
    with ProgressReporter("LFW attributes", len(samples)) as progress:
        predictions = await predict_all(pipeline, root, samples, progress.advance)
    described = describe(pipeline, command)
    described["models"]["attributes"] = {
        task: spec.version for task, spec in pipeline.registry.attribute_specs.items()
    }
    described["machine"].update(cpu_description())
    return {
        "labels": display_path(labels_file),
        "limit": limit,
        "age_labels": "2003 minus the birth year (LFW's news photos are of about 2002-2004)",
        **attributes_report(pipeline, predictions),
        **described,
    }


def attributes_summary_line(result: dict[str, Any]) -> str:
    timing = result["timing"]["attribute_stage_ms_per_face"]
    return (
        f"gender accuracy {result['gender']['accuracy']:.4f} ({result['gender']['faces']} "
        f"faces), age MAE {result['age']['mae']:.1f} years, expression agreement "
        f"{result['expression']['agreement']:.3f} ({result['expression']['faces_labelled']} "
        f"labelled), {timing['median']:.1f} ms per face (median)"
    )
