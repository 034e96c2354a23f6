"""Age, gender and expression against a labelled LFW subset (``docs/eval/attributes_set.csv``).

The set: the first two LFW photos of 148 public people (politicians, actors, singers,
athletes) whose gender and birth year are public. LFW's photos are news photos of about
2002-2004; the labelled age is 2003 minus the birth year, so it is itself off by a year or
so. Expressions were labelled by hand, by looking at the first photo of each person, into
fer's seven classes; faces that were ambiguous (talking, half smiles, effort grimaces,
singing) were left unlabelled (an empty ``expression``).

Each photo goes through the service's own pipeline: detect, the face nearest the centre (the
labelled person), the mesh, then every attribute, one photo at a time so that the per-face
times are those of a lone request.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation.lfw import nearest_centre
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import cpu_description, describe, display_path
from facesvc.inference.attributes import ATTRIBUTES
from facesvc.inference.attributes.models import EXPRESSION_LABELS, FaceAttributes
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.runner import ModelRunner

AGE_BANDS = ((0, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 70), (70, 200))


@dataclass(frozen=True)
class AttributeSample:
    file: str  # relative to the LFW folder
    gender: str
    born: int
    age: int
    expression: str | None  # None: not labelled


@dataclass(frozen=True)
class Prediction:
    sample: AttributeSample
    attributes: FaceAttributes | None  # None: no face found
    seconds: float  # the attribute stage alone (crops and networks), this face


def read_attribute_set(path: Path) -> list[AttributeSample]:
    samples = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            expression = row["expression"].strip() or None
            if expression is not None and expression not in EXPRESSION_LABELS:
                raise ValueError(f"{path}: {row['file']}: unknown expression {expression!r}")
            if row["gender"] not in ("female", "male"):
                raise ValueError(f"{path}: {row['file']}: gender {row['gender']!r}")
            samples.append(
                AttributeSample(
                    file=row["file"],
                    gender=row["gender"],
                    born=int(row["born"]),
                    age=int(row["age"]),
                    expression=expression,
                )
            )
    return samples


async def predict_all(
    pipeline: FacePipeline,
    root: Path,
    samples: Sequence[AttributeSample],
    progress: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """Every attribute of the centre face of each photo, one photo at a time."""
    wanted = frozenset(ATTRIBUTES)
    found = []
    for sample in samples:
        image = await pipeline.decode(await asyncio.to_thread((root / sample.file).read_bytes))
        detections = await pipeline.detect(image)
        attributes, seconds = None, 0.0
        if detections:
            centre = nearest_centre(detections, image.shape[1], image.shape[0])
            faces = await pipeline.landmarks(image, [centre], dense=True)
            start = time.perf_counter()
            (attributes,) = await pipeline.attributes(image, faces, wanted)
            seconds = time.perf_counter() - start
        found.append(Prediction(sample, attributes, seconds))
        if progress:
            progress(1)
    return found


def _band(age: float) -> str:
    for low, high in AGE_BANDS:
        if low <= age < high:
            return f"{low}-{high - 1}" if high < 200 else f"{low}+"
    return "?"


def _rounded(value: float | np.floating[Any], digits: int = 2) -> float:
    return round(float(value), digits)


def gender_report(scored: Sequence[Prediction]) -> dict[str, Any]:
    truth = [p.sample.gender for p in scored]
    said = [p.attributes.gender.label for p in scored if p.attributes and p.attributes.gender]
    right = [t == s for t, s in zip(truth, said, strict=True)]
    by_gender = {
        gender: {
            "faces": sum(t == gender for t in truth),
            "accuracy": _rounded(
                np.mean([r for r, t in zip(right, truth, strict=True) if t == gender]), 4
            ),
        }
        for gender in ("female", "male")
    }
    mistakes = [
        {
            "file": p.sample.file,
            "labelled": p.sample.gender,
            "confidence": _rounded(p.attributes.gender.confidence, 3),
        }
        for p, ok in zip(scored, right, strict=True)
        if not ok and p.attributes and p.attributes.gender
    ]
    return {
        "faces": len(right),
        "accuracy": _rounded(np.mean(right), 4),
        "by_gender": by_gender,
        "mistakes": mistakes,
    }


def age_report(scored: Sequence[Prediction]) -> dict[str, Any]:
    truth = np.array([p.sample.age for p in scored], dtype=np.float64)
    ages = [p.attributes.age for p in scored if p.attributes and p.attributes.age]
    said = np.array([a.years for a in ages])
    low = np.array([a.low for a in ages])
    high = np.array([a.high for a in ages])
    error = said - truth
    bands: dict[str, Any] = {}
    for band in dict.fromkeys(_band(a) for a in sorted(truth)):
        mask = np.array([_band(a) == band for a in truth])
        bands[band] = {
            "faces": int(mask.sum()),
            "mae": _rounded(np.abs(error[mask]).mean(), 1),
            "mean_error": _rounded(error[mask].mean(), 1),
        }
    worst = np.argsort(-np.abs(error))[:10]
    return {
        "faces": len(truth),
        "mae": _rounded(np.abs(error).mean(), 2),
        "median_absolute_error": _rounded(np.median(np.abs(error)), 1),
        "mean_error": _rounded(error.mean(), 2),
        "within_5_years": _rounded(np.mean(np.abs(error) <= 5), 3),
        "within_10_years": _rounded(np.mean(np.abs(error) <= 10), 3),
        "interval_80_coverage": _rounded(np.mean((low <= truth) & (truth <= high)), 3),
        "interval_80_median_width": _rounded(np.median(high - low), 1),
        "correlation": _rounded(np.corrcoef(said, truth)[0, 1], 3),
        "by_age_band": bands,
        "worst": [
            {
                "file": scored[i].sample.file,
                "labelled": int(truth[i]),
                "estimated": _rounded(said[i], 1),
            }
            for i in worst
        ],
    }


def expression_report(scored: Sequence[Prediction]) -> dict[str, Any]:
    labelled = [p for p in scored if p.sample.expression is not None]
    pairs = [
        (p.sample.expression, p.attributes.expression.label)
        for p in labelled
        if p.attributes and p.attributes.expression
    ]
    confusion = {
        label: dict(Counter(said for truth, said in pairs if truth == label))
        for label in EXPRESSION_LABELS
        if any(truth == label for truth, _ in pairs)
    }
    agree = [truth == said for truth, said in pairs]
    happy = [(truth == "happy") == (said == "happy") for truth, said in pairs]
    return {
        "faces_labelled": len(pairs),
        "labels": dict(Counter(truth for truth, _ in pairs)),
        "agreement": _rounded(np.mean(agree), 4) if agree else None,
        "happy_vs_not_agreement": _rounded(np.mean(happy), 4) if happy else None,
        "by_label": {
            label: {
                "faces": sum(row.values()),
                "agreement": _rounded(row.get(label, 0) / sum(row.values()), 3),
            }
            for label, row in confusion.items()
        },
        "confusion": confusion,
        "confusion_note": "rows: hand label; columns: the network's expression",
        "predicted_on_whole_set": dict(
            Counter(
                p.attributes.expression.label
                for p in scored
                if p.attributes and p.attributes.expression
            )
        ),
    }


def pose_report(scored: Sequence[Prediction]) -> dict[str, Any]:
    """No labels: the spread of the angles on these photos (LFW's are mostly near frontal)."""
    poses = [p.attributes.pose for p in scored if p.attributes and p.attributes.pose]
    angles = {
        "yaw": np.array([p.yaw for p in poses]),
        "pitch": np.array([p.pitch for p in poses]),
        "roll": np.array([p.roll for p in poses]),
    }
    return {
        name: {
            "median": _rounded(np.median(v), 1),
            "p5": _rounded(np.percentile(v, 5), 1),
            "p95": _rounded(np.percentile(v, 95), 1),
        }
        for name, v in angles.items()
    }


def timing_report(pipeline: FacePipeline, scored: Sequence[Prediction]) -> dict[str, Any]:
    stage = np.array([p.seconds for p in scored]) * 1000
    registry = pipeline.registry
    runners: dict[str, ModelRunner[Any, Any]] = {**registry.attributes, "mesh": registry.mesh}
    models = {
        name: _rounded(1000 * runner.busy_seconds / runner.items, 2)
        for name, runner in runners.items()
        if runner.items
    }
    return {
        "attribute_stage_ms_per_face": {
            "median": _rounded(np.median(stage), 2),
            "p90": _rounded(np.percentile(stage, 90), 2),
            "how": "pipeline.attributes(all) on one face per call, after detection and the "
            "mesh: the crops, the three networks (each on its own thread, together) and pose",
        },
        "model_ms_per_face": models,
        "model_note": "each runner's own time in its model calls over the faces it ran, one "
        "face per call (mesh: also run for plain detection with BlazeFace)",
    }


def attributes_report(pipeline: FacePipeline, predictions: Sequence[Prediction]) -> dict[str, Any]:
    scored = [p for p in predictions if p.attributes is not None]
    return {
        "photos": len(predictions),
        "faces_scored": len(scored),
        "detection_misses": [p.sample.file for p in predictions if p.attributes is None],
        "gender": gender_report(scored),
        "age": age_report(scored),
        "expression": expression_report(scored),
        "pose": pose_report(scored),
        "timing": timing_report(pipeline, scored),
    }


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
