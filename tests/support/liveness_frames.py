"""Hand-made frames for the liveness checker's rules (eyes, mouth, head turn, whose face) and a
run of a checker over them, as the database would resume it after every frame."""

from __future__ import annotations

import numpy as np

from facesvc.inference.landmarks.signals import FaceSignals, HeadPose
from facesvc.services.liveness.checker import (
    Challenge,
    FrameObservation,
    LivenessChecker,
    LivenessProgress,
    LivenessThresholds,
)

T = LivenessThresholds()
OPEN, CLOSED = T.eyes_open_above + 0.05, T.eyes_closed_below - 0.02
SHUT, WIDE = T.mouth_closed_below / 2, T.mouth_open_above + 0.1
FRONT, LEFT, RIGHT = 0.0, T.turn_yaw_deg + 8, -(T.turn_yaw_deg + 8)
ME = np.array([1.0, 0.0, 0.0], np.float32)
SOMEONE_ELSE = np.array([0.0, 1.0, 0.0], np.float32)


def frame(
    eyes: float = OPEN,
    mouth: float = SHUT,
    yaw: float = FRONT,
    *,
    faces: int = 1,
    who: np.ndarray = ME,
    tag: str | None = None,
) -> FrameObservation:
    frame.count += 1  # type: ignore[attr-defined]
    return FrameObservation(
        faces=faces,
        signals=FaceSignals(eyes, mouth, HeadPose(yaw, 0.0, 0.0)) if faces else None,
        embedding=who if faces else None,
        digest=tag or f"frame-{frame.count}",  # type: ignore[attr-defined]
    )


frame.count = 0  # type: ignore[attr-defined]


def shows(challenge: Challenge) -> FrameObservation:
    return {
        "turn_left": lambda: frame(yaw=LEFT),
        "turn_right": lambda: frame(yaw=RIGHT),
        "blink": lambda: frame(eyes=CLOSED),
        "open_mouth": lambda: frame(mouth=WIDE),
    }[challenge]()


def run(
    challenges: list[Challenge], frames: list[FrameObservation], max_frames: int = 60
) -> LivenessProgress:
    checker = LivenessChecker(T, min_similarity=0.4, max_frames=max_frames)
    progress = LivenessProgress(challenges=challenges)
    reference = None
    for observed in frames:
        if progress.status != "in_progress":
            break
        _, reference = checker.step(progress, observed, reference)
        # what the database keeps must be enough to go on
        progress = LivenessProgress.from_json(progress.as_json())
    return progress
