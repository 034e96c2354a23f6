"""Step 4 of the liveness evaluation: sessions replayed frame by frame through the service's
own frame analysis (``observe_frame``) and rules (``LivenessChecker``)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from facesvc.evaluation.identify import wilson_interval
from facesvc.evaluation.liveness.sessions import RAN_OUT, SessionSpec, frame_bytes
from facesvc.inference.pipeline import FacePipeline
from facesvc.services.liveness.checker import FrameObservation, LivenessChecker, LivenessProgress
from facesvc.services.liveness.frames import observe_frame


@dataclass
class SessionOutcome:
    id: str
    kind: str
    passed: bool
    reason: str | None  # None when passed
    frames_sent: int
    stuck_at: str | None = None  # the challenge waited on when the frames ran out
    min_similarity: float | None = None  # lowest similarity to the first frame
    digests: list[str] = field(default_factory=list)  # sha256 of the bytes of each frame sent
    frame_digests: list[str] = field(default_factory=list)  # the service's digests of them
    trace: list[dict[str, Any]] = field(default_factory=list)  # what each frame showed


@dataclass
class FrameObserver:
    """``observe_frame`` with the observation of identical bytes remembered (the pipeline is
    deterministic), and the time each computed frame took. ``seen`` is keyed by the bytes'
    sha256, ``SessionOutcome.digests`` too."""

    pipeline: FacePipeline
    seen: dict[str, FrameObservation] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    async def __call__(self, data: bytes) -> FrameObservation:
        key = hashlib.sha256(data).hexdigest()
        if key not in self.seen:
            start = time.perf_counter()
            self.seen[key] = await observe_frame(self.pipeline, data)
            self.seconds.append(time.perf_counter() - start)
        return self.seen[key]


async def run_session(
    root: Path,
    session: SessionSpec,
    checker: LivenessChecker,
    observe: Callable[[bytes], Awaitable[FrameObservation]],
    used_elsewhere: AbstractSet[str] = frozenset(),
) -> SessionOutcome:
    """Send the session's frames one by one until it ends; ``used_elsewhere``: the digests
    of frames earlier sessions used (the service's replay check)."""
    progress = LivenessProgress(list(session.challenges))
    reference = None
    similarities = []
    digests: list[str] = []
    frame_digests: list[str] = []
    trace: list[dict[str, Any]] = []
    for frame in session.frames:
        data = await asyncio.to_thread(frame_bytes, root, frame)
        observation = await observe(data)
        digests.append(hashlib.sha256(data).hexdigest())
        frame_digests.append(observation.digest)
        observation = replace(observation, replayed=observation.digest in used_elsewhere)
        result, reference = checker.step(progress, observation, reference)
        if result.similarity is not None:
            similarities.append(result.similarity)
        trace.append(
            {
                "file": frame.file,
                "eyes": result.eye_openness,
                "mouth": result.mouth_openness,
                "yaw": result.yaw_deg,
                "similarity": result.similarity,
                "completed": result.completed,
            }
        )
        if progress.status != "in_progress":
            break
    passed = progress.status == "passed"
    ran_out = progress.status == "in_progress"
    return SessionOutcome(
        session.id,
        session.kind,
        passed,
        None if passed else (RAN_OUT if ran_out else progress.reason),
        progress.frames,
        progress.current if ran_out else None,
        min(similarities) if similarities else None,
        digests,
        frame_digests,
        trace,
    )


async def run_sessions(
    pipeline: FacePipeline,
    root: Path,
    sessions: list[SessionSpec],
    checker: LivenessChecker,
    *,
    progress: Callable[[int], None] | None = None,
    observer: FrameObserver | None = None,
) -> tuple[list[SessionOutcome], FrameObserver]:
    """Genuine sessions first, each one's frames then known to the replay check as the
    service would know them; every other session is run on its own, as if the service had
    seen no other (its own rules must stop it), but replays, which run after the genuine
    sessions they replay."""
    observe = observer or FrameObserver(pipeline)
    if not pipeline.registry.ready:
        await pipeline.registry.start()
    outcomes = []
    used: set[str] = set()
    ordered = [s for s in sessions if s.kind == "genuine"] + [
        s for s in sessions if s.kind != "genuine"
    ]
    for session in ordered:
        earlier: AbstractSet[str] = used if session.kind in ("genuine", "replay") else frozenset()
        outcome = await run_session(root, session, checker, observe, earlier)
        outcomes.append(outcome)
        if session.kind == "genuine":
            used.update(outcome.frame_digests)
        if progress:
            progress(1)
    return outcomes, observe


async def similarity_sweep(
    pipeline: FacePipeline,
    root: Path,
    sessions: list[SessionSpec],
    checker: LivenessChecker,
    observer: FrameObserver,
    levels: Sequence[float] = (0.4, 0.45, 0.5, 0.55, 0.6),
) -> list[dict[str, Any]]:
    """Genuine and other-person sessions again at other same-person thresholds
    (FACESVC_LIVENESS_MIN_SIMILARITY), on the frames already observed. LFW's genuine frames
    are photos taken years apart; a real session's frames are seconds apart, so this shows the
    price on the harsher side."""
    kept = [s for s in sessions if s.kind in ("genuine", "other_person")]
    rows = []
    for level in levels:
        strict = LivenessChecker(checker.t, level, checker.max_frames)
        outcomes, _ = await run_sessions(pipeline, root, kept, strict, observer=observer)
        row: dict[str, Any] = {"min_similarity": level}
        for kind in ("genuine", "other_person"):
            mine = [o for o in outcomes if o.kind == kind]
            row[kind] = pass_rate(sum(o.passed for o in mine), len(mine))
        rows.append(row)
    return rows


def pass_rate(passed: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(passed, total)
    return {
        "sessions": total,
        "passed": passed,
        "pass_rate": round(passed / total, 4) if total else None,
        "ci95": [round(low, 4), round(high, 4)],
    }
