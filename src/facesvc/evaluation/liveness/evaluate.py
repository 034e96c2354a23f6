"""``facesvc eval liveness``: the photos measured (cached), the session set (rebuilt on request),
every session replayed through the service's checker, and the report, in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facesvc.evaluation import EvaluationError
from facesvc.evaluation.identify import lfw_images
from facesvc.evaluation.lfw import match_threshold
from facesvc.evaluation.liveness.replay import run_sessions, similarity_sweep
from facesvc.evaluation.liveness.report import challenge_photo_jitter, liveness_report
from facesvc.evaluation.liveness.sessions import (
    Labels,
    SessionSpec,
    build_session_set,
    write_session_set,
)
from facesvc.evaluation.liveness.signals import (
    PhotoSignals,
    SignalCache,
    measure_photos,
    signals_key,
)
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import cpu_description, describe, display_path
from facesvc.inference.pipeline import FacePipeline
from facesvc.services.liveness.checker import LivenessChecker, LivenessThresholds


async def evaluate_liveness(
    pipeline: FacePipeline,
    data_dir: Path,
    *,
    labels: Labels,
    labels_file: Path,
    session_set: Path,
    rebuild_set: bool,
    seed: int,
    draws: int,
    limit: int | None,
    max_frames: int,
    cache_dir: Path | None,
    concurrency: int,
    command: str,
) -> dict[str, Any]:
    """Active liveness on LFW: every photo's mesh signals (cached in ``cache_dir``), then the
    sessions of ``session_set`` (with ``rebuild_set``, first built again from the labels,
    ``seed`` and ``draws``) frame by frame through the service's checker."""
    settings = pipeline.registry.settings
    # as the service checks it: never below the 1:1 threshold
    same_person = max(match_threshold(pipeline), settings.liveness_min_similarity)
    root = data_dir / "lfw" / "lfw-deepfunneled"
    photos = await _measured_photos(pipeline, data_dir, cache_dir, concurrency)
    if rebuild_set:
        built = build_session_set(photos, labels, seed=seed, draws=draws, max_frames=max_frames)
        write_session_set(session_set, {"labels": display_path(labels_file), **built})
    sessions = _sessions(session_set, root, limit)
    checker = LivenessChecker(LivenessThresholds(), same_person, max_frames)
    with ProgressReporter("liveness sessions", len(sessions)) as progress:
        outcomes, observer = await run_sessions(
            pipeline, root, sessions, checker, progress=progress.advance
        )
    with ProgressReporter("still copies of challenge photos", 60) as progress:
        spreads = await challenge_photo_jitter(root, sessions, observer, progress=progress.advance)
    sweep = await similarity_sweep(pipeline, root, sessions, checker, observer)
    described = describe(pipeline, command)
    described["models"]["mesh_version"] = pipeline.registry.mesh_spec.version
    described["machine"].update(cpu_description())
    described["machine"]["inference_threads"] = settings.inference_threads
    return {
        "set": display_path(session_set),
        "labels": display_path(labels_file),
        "limit": limit,
        **liveness_report(photos, labels, sessions, outcomes, observer, checker, spreads),
        "stricter_same_person": sweep,
        **described,
    }


async def _measured_photos(
    pipeline: FacePipeline, data_dir: Path, cache_dir: Path | None, concurrency: int
) -> dict[str, PhotoSignals]:
    """Every LFW photo's centre face: eye and mouth openness, yaw, embedding."""
    names = lfw_images(data_dir)
    cache = None
    if cache_dir is not None:
        cache = SignalCache(cache_dir / "face_signals.sqlite", signals_key(pipeline))
    try:
        with ProgressReporter("measuring LFW faces", len(names)) as progress:
            return await measure_photos(
                pipeline,
                data_dir / "lfw" / "lfw-deepfunneled",
                names,
                cache,
                progress=progress.advance,
                skipped=progress.skip,
                concurrency=concurrency,
            )
    finally:
        if cache is not None:
            cache.close()


def _sessions(session_set: Path, root: Path, limit: int | None) -> list[SessionSpec]:
    """The set's sessions; with ``limit``, the first genuine ones and the attacks on them."""
    raw = json.loads(session_set.read_text(encoding="utf-8"))
    sessions = [SessionSpec.from_json(s) for s in raw["sessions"]]
    missing = sorted({f.file for s in sessions for f in s.frames if not (root / f.file).is_file()})
    if missing:
        raise EvaluationError(f"{len(missing)} photos of the set are not in {root}: {missing[:3]}")
    if limit is not None:
        genuine = {s.id for s in sessions if s.kind == "genuine"}
        kept = set(sorted(genuine)[:limit])
        sessions = [s for s in sessions if (s.of or s.id) in kept]
    return sessions


def liveness_summary_line(result: dict[str, Any]) -> str:
    genuine, attacks = result["genuine"], result["attacks"]
    return (
        f"genuine {genuine['passed']}/{genuine['sessions']} passed ({genuine['pass_rate']:.1%}); "
        "attacks passed: "
        + ", ".join(f"{kind} {row['passed']}/{row['sessions']}" for kind, row in attacks.items())
        + f"; {result['timing']['ms_per_frame_median']} ms per frame (median)"
    )
