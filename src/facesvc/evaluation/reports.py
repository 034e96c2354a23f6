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

from facesvc.evaluation.attributes import AttributeSample, attributes_report, predict_all
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import cpu_description, describe, display_path
from facesvc.inference.pipeline import FacePipeline

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
