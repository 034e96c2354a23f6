"""The rules of an active liveness session, as a pure function of the frames seen so far.

A session asks for 2-3 challenges in a random order (``turn_left``, ``turn_right``,
``blink``, ``open_mouth``). Each frame is reduced by the pipeline to a ``FrameObservation``
(how many faces, the face's embedding, its mesh signals, a digest of the bytes) and
``LivenessChecker.step`` moves the session's ``LivenessProgress`` on. It passes only when:

- every challenge is seen, in order: the frame shows the challenge's *active* state (eyes
  closed, mouth open, head turned) after an earlier frame showed its *rest* state (eyes
  open, mouth closed, head frontal): the signal moved; a later challenge's movement before
  the current one fails the session (``wrong-order``), except closed eyes (people blink);
- exactly one face is in every frame that has a face (``multiple-faces``);
- it is the same person in every frame: cosine similarity to the first frame's face at or
  above the 1:1 match threshold (``different-person``);
- the frames are frames of a moving face: the same bytes twice, or ``still_frames`` frames
  in a row whose signals do not change, fail with ``no-motion``; a frame already used by
  another session fails with ``replayed-frames``.

A session that reaches its frame budget without passing fails: ``no-motion`` when its
signals never moved more than ``motion_*``, else ``challenges-not-completed``. Expiry is
the service's (it knows the clock). Nothing here does I/O: the evaluation replays sessions
through the same code the API runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from facesvc.inference.landmarks.signals import FaceSignals

Challenge = Literal["turn_left", "turn_right", "blink", "open_mouth"]
CHALLENGES: tuple[Challenge, ...] = get_args(Challenge)
Status = Literal["in_progress", "passed", "failed", "expired"]
FailureReason = Literal[
    "wrong-order",
    "multiple-faces",
    "different-person",
    "no-motion",
    "replayed-frames",
    "challenges-not-completed",
    "expired",
]
# Which signal each challenge moves (its rest state must be seen before its active state).
_SIGNAL: dict[Challenge, str] = {
    "turn_left": "yaw",
    "turn_right": "yaw",
    "blink": "eyes",
    "open_mouth": "mouth",
}
REASON_TEXT: dict[str, str] = {
    "wrong-order": "a later challenge was done before the current one",
    "multiple-faces": "more than one face was in a frame",
    "different-person": "the face changed between frames",
    "no-motion": "the face did not move: a still image, or the same frame sent again",
    "replayed-frames": "a frame was already used by an earlier session",
    "challenges-not-completed": "the frame budget ran out before every challenge was done",
    "expired": "the session expired before it passed",
}


@dataclass(frozen=True, slots=True)
class LivenessThresholds:
    """Where each signal counts as moved. Defaults come from the face mesh on LFW
    (``facesvc eval liveness``, docs/eval/liveness.json): eye openness is the mean eye aspect
    ratio, mouth openness the inner-lip gap over the mouth's width, yaw in degrees
    (> 0: nose towards the image's right = the subject's own left for an unmirrored camera)."""

    eyes_closed_below: float = 0.12
    eyes_open_above: float = 0.2
    mouth_open_above: float = 0.3
    mouth_closed_below: float = 0.1
    turn_yaw_deg: float = 18.0
    frontal_yaw_deg: float = 10.0
    # A frame "did not move" when every signal changed less than these since the last frame.
    still_eyes: float = 0.004
    still_mouth: float = 0.004
    still_yaw_deg: float = 0.4
    still_frames: int = 8
    # A session "moved" when some signal's range over its frames exceeds these.
    motion_eyes: float = 0.06
    motion_mouth: float = 0.1
    motion_yaw_deg: float = 8.0


@dataclass(frozen=True, slots=True)
class FrameObservation:
    """What the pipeline saw in one frame. ``signals`` and ``embedding`` are the largest
    face's (None without a face); ``replayed``: the digest was used by another session."""

    faces: int
    signals: FaceSignals | None
    embedding: np.ndarray | None
    digest: str
    replayed: bool = False


@dataclass(slots=True)
class FrameResult:
    """One frame's outcome, for the client's prompt: which challenge it completed, if any."""

    faces: int
    completed: Challenge | None = None
    eye_openness: float | None = None
    mouth_openness: float | None = None
    yaw_deg: float | None = None
    similarity: float | None = None


@dataclass(slots=True)
class LivenessProgress:
    """The session's state; ``as_json``/``from_json`` are what the database keeps."""

    challenges: list[Challenge]
    done: int = 0
    frames: int = 0
    status: Status = "in_progress"
    reason: FailureReason | None = None
    rest_seen: list[str] = field(default_factory=list)
    still_run: int = 0
    last: list[float] | None = None  # eyes, mouth, yaw of the previous frame with a face
    low: list[float] | None = None  # per-signal minimum and maximum over the session
    high: list[float] | None = None
    digests: list[str] = field(default_factory=list)

    @property
    def current(self) -> Challenge | None:
        return self.challenges[self.done] if self.done < len(self.challenges) else None

    def fail(self, reason: FailureReason) -> None:
        self.status, self.reason = "failed", reason

    def as_json(self) -> dict[str, Any]:
        return {
            "challenges": list(self.challenges),
            "done": self.done,
            "frames": self.frames,
            "status": self.status,
            "reason": self.reason,
            "rest_seen": sorted(self.rest_seen),
            "still_run": self.still_run,
            "last": self.last,
            "low": self.low,
            "high": self.high,
            "digests": self.digests,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LivenessProgress:
        return cls(**data)


def _signals_vector(signals: FaceSignals) -> list[float]:
    return [signals.eye_openness, signals.mouth_openness, signals.pose.yaw]


class LivenessChecker:
    def __init__(
        self, thresholds: LivenessThresholds, min_similarity: float, max_frames: int
    ) -> None:
        self.t = thresholds
        self.min_similarity = min_similarity
        self.max_frames = max_frames

    def active(self, challenge: Challenge, signals: FaceSignals) -> bool:
        t = self.t
        if challenge == "blink":
            return signals.eye_openness < t.eyes_closed_below
        if challenge == "open_mouth":
            return signals.mouth_openness > t.mouth_open_above
        if challenge == "turn_left":
            return signals.pose.yaw > t.turn_yaw_deg
        return signals.pose.yaw < -t.turn_yaw_deg

    def rest_states(self, signals: FaceSignals) -> set[str]:
        t = self.t
        rest = set()
        if signals.eye_openness > t.eyes_open_above:
            rest.add("eyes")
        if signals.mouth_openness < t.mouth_closed_below:
            rest.add("mouth")
        if abs(signals.pose.yaw) < t.frontal_yaw_deg:
            rest.add("yaw")
        return rest

    def step(
        self,
        progress: LivenessProgress,
        frame: FrameObservation,
        reference: np.ndarray | None,
    ) -> tuple[FrameResult, np.ndarray | None]:
        """Apply one frame (in place); returns its result and the session's reference
        embedding (the first face seen). Call only while ``progress.status`` is in
        progress."""
        if progress.status != "in_progress":
            raise ValueError("the session has ended")
        progress.frames += 1
        result = FrameResult(faces=frame.faces)
        if frame.replayed:
            progress.fail("replayed-frames")
            return result, reference
        if frame.digest in progress.digests:
            progress.fail("no-motion")
            return result, reference
        progress.digests.append(frame.digest)
        if frame.faces > 1:
            progress.fail("multiple-faces")
            return result, reference
        if frame.faces == 1 and frame.signals is not None and frame.embedding is not None:
            reference = self._face(progress, frame.signals, frame.embedding, reference, result)
        if progress.status == "in_progress" and progress.frames >= self.max_frames:
            progress.fail("challenges-not-completed" if self._moved(progress) else "no-motion")
        return result, reference

    def _face(
        self,
        progress: LivenessProgress,
        signals: FaceSignals,
        embedding: np.ndarray,
        reference: np.ndarray | None,
        result: FrameResult,
    ) -> np.ndarray:
        result.eye_openness = round(signals.eye_openness, 4)
        result.mouth_openness = round(signals.mouth_openness, 4)
        result.yaw_deg = round(signals.pose.yaw, 2)
        if reference is None:
            reference = embedding
        else:
            similarity = float(np.dot(reference, embedding))
            result.similarity = round(similarity, 4)
            if similarity < self.min_similarity:
                progress.fail("different-person")
                return reference
        vector = _signals_vector(signals)
        self._track_motion(progress, vector)
        if progress.status != "in_progress":
            return reference
        current = progress.current
        if current is not None and self.active(current, signals):
            if _SIGNAL[current] in progress.rest_seen:
                result.completed = current
                progress.done += 1
                if progress.done == len(progress.challenges):
                    progress.status = "passed"
        elif any(
            self.active(later, signals)
            for later in progress.challenges[progress.done + 1 :]
            if later != "blink"  # people blink while they turn: never held against them
        ):
            progress.fail("wrong-order")
            return reference
        progress.rest_seen = sorted(set(progress.rest_seen) | self.rest_states(signals))
        return reference

    def _track_motion(self, progress: LivenessProgress, vector: list[float]) -> None:
        t = self.t
        if progress.last is not None:
            deltas = [abs(a - b) for a, b in zip(vector, progress.last, strict=True)]
            still = (
                deltas[0] < t.still_eyes
                and deltas[1] < t.still_mouth
                and deltas[2] < t.still_yaw_deg
            )
            progress.still_run = progress.still_run + 1 if still else 0
            if progress.still_run + 1 >= t.still_frames:
                progress.fail("no-motion")
        progress.last = [round(v, 5) for v in vector]
        progress.low = vector if progress.low is None else list(map(min, progress.low, vector))
        progress.high = vector if progress.high is None else list(map(max, progress.high, vector))

    def _moved(self, progress: LivenessProgress) -> bool:
        if progress.done > 0:
            return True
        if progress.low is None or progress.high is None:
            return False
        t = self.t
        ranges = [hi - lo for hi, lo in zip(progress.high, progress.low, strict=True)]
        return (
            ranges[0] > t.motion_eyes or ranges[1] > t.motion_mouth or ranges[2] > t.motion_yaw_deg
        )
