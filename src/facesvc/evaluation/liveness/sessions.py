"""Step 3 of the liveness evaluation: the session set (genuine sessions of one person's LFW
photos and the attacks made from them, deterministic for a seed) and the photos judged by
eye it is built from."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np

from facesvc.evaluation.liveness.signals import PhotoSignals, single_face
from facesvc.services.liveness.checker import CHALLENGES, Challenge

SessionKind = Literal[
    "genuine", "same_photo", "still_photo", "other_person", "wrong_order", "replay", "recorded"
]
ATTACK_KINDS: tuple[SessionKind, ...] = (
    "same_photo",
    "still_photo",
    "other_person",
    "wrong_order",
    "replay",
)
# What stops each attack when the rules work (wrong_order: a blink done early is never held
# against the user, so such a session runs out of frames instead).
EXPECTED_REASONS: dict[str, tuple[str, ...]] = {
    "same_photo": ("no-motion",),
    "still_photo": ("no-motion",),
    "other_person": ("different-person",),
    "wrong_order": ("wrong-order", "challenges-not-completed"),
    "replay": ("replayed-frames",),
}
# Ran out of frames while still in progress: the service would let the session expire.
RAN_OUT = "challenges-not-completed"


@dataclass(frozen=True)
class Transform:
    """A printed photo held still, as a camera sees it twice: re-encoded, rescaled, shifted.
    In the set file: ``[jpeg_quality, scale, dx, dy]``."""

    jpeg_quality: int
    scale: float
    shift: tuple[int, int]

    def as_json(self) -> list[float]:
        return [self.jpeg_quality, self.scale, *self.shift]


@dataclass(frozen=True)
class FrameSpec:
    """An LFW photo (relative to lfw-deepfunneled/), sent as its own bytes or transformed. In
    the set file: the file name, or ``[file, jpeg_quality, scale, dx, dy]``."""

    file: str
    transform: Transform | None = None

    def as_json(self) -> str | list[Any]:
        if self.transform is None:
            return self.file
        return [self.file, *self.transform.as_json()]

    @classmethod
    def from_json(cls, data: str | list[Any]) -> FrameSpec:
        if isinstance(data, str):
            return cls(data)
        file, quality, scale, dx, dy = data
        return cls(str(file), Transform(int(quality), float(scale), (int(dx), int(dy))))


@dataclass(frozen=True)
class SessionSpec:
    id: str
    kind: SessionKind
    person: str
    challenges: tuple[Challenge, ...]
    frames: tuple[FrameSpec, ...]
    of: str | None = None  # the genuine session an attack was made from

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "person": self.person,
            "challenges": list(self.challenges),
            "frames": [f.as_json() for f in self.frames],
        }
        if self.of is not None:
            out["of"] = self.of
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionSpec:
        challenges = tuple(data["challenges"])
        if not set(challenges) <= set(CHALLENGES):
            raise ValueError(f"{data['id']}: unknown challenge in {challenges}")
        kind = data["kind"]
        if kind not in get_args(SessionKind):
            raise ValueError(f"{data['id']}: unknown kind {kind!r}")
        return cls(
            str(data["id"]),
            kind,
            str(data["person"]),
            challenges,
            tuple(FrameSpec.from_json(f) for f in data["frames"]),
            data.get("of"),
        )


def transformed(data: bytes, transform: Transform) -> bytes:
    """``data`` decoded, scaled, shifted (edge pixels repeated) and JPEG-encoded again."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not an image")
    height, width = image.shape[:2]
    dx, dy = transform.shift
    matrix = np.array([[transform.scale, 0.0, dx], [0.0, transform.scale, dy]])
    size = (round(width * transform.scale), round(height * transform.scale))
    moved = cv2.warpAffine(
        image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    ok, encoded = cv2.imencode(".jpg", moved, [cv2.IMWRITE_JPEG_QUALITY, transform.jpeg_quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(encoded.tobytes())


def frame_bytes(root: Path, frame: FrameSpec) -> bytes:
    data = (root / frame.file).read_bytes()
    return data if frame.transform is None else transformed(data, frame.transform)


@dataclass(frozen=True)
class Labels:
    """Photos judged by eye (docs/eval/liveness_labels.json): which of the candidates looked
    at really show closed eyes, a wide-open mouth; the turn cut on the detector's yaw."""

    eyes_closed: frozenset[str]
    mouth_open: frozenset[str]
    looked_at_eyes: frozenset[str]
    looked_at_mouth: frozenset[str]
    turn_detector_yaw_deg: float
    neutral: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Labels:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            frozenset(data["eyes"]["closed"]),
            frozenset(data["mouth"]["open"]),
            frozenset(data["eyes"]["looked_at"]),
            frozenset(data["mouth"]["looked_at"]),
            float(data["turn"]["detector_yaw_deg"]),
            {k: float(v) for k, v in data["neutral"].items() if k != "why"},
        )


Role = Literal["neutral", "turn_left", "turn_right", "blink", "open_mouth"]


def photo_roles(photo: PhotoSignals, labels: Labels) -> set[Role]:
    """Which frame of a genuine session a photo may be. Challenge photos are chosen without
    the mesh thresholds under test where that can be done: closed eyes and open mouths by eye,
    turns by the detector's keypoint yaw (another model). The neutral first frame is chosen by
    the mesh signals themselves, well inside the rest states (``labels.neutral``)."""
    roles: set[Role] = set()
    if photo.name in labels.eyes_closed:
        roles.add("blink")
    if photo.name in labels.mouth_open:
        roles.add("open_mouth")
    if photo.detector_yaw >= labels.turn_detector_yaw_deg:
        roles.add("turn_left")  # nose towards the image's right: the subject's own left
    if photo.detector_yaw <= -labels.turn_detector_yaw_deg:
        roles.add("turn_right")
    n = labels.neutral
    if (
        photo.eye >= n["eye_min"]
        and photo.mouth <= n["mouth_max"]
        and abs(photo.yaw) <= n["yaw_max_deg"]
        and abs(photo.detector_yaw) <= n["yaw_max_deg"]
        and photo.name not in labels.eyes_closed | labels.mouth_open
    ):
        roles.add("neutral")
    return roles


def _draw_challenges(rng: random.Random, length: int) -> tuple[Challenge, ...]:
    return tuple(rng.sample(CHALLENGES, length))


def jitter(rng: random.Random) -> Transform:
    """A small change a still photo goes through between two camera frames."""
    return Transform(
        jpeg_quality=rng.choice((75, 80, 85, 90, 95)),
        scale=round(rng.uniform(0.98, 1.02), 3),
        shift=(rng.randint(-2, 2), rng.randint(-2, 2)),
    )


def write_session_set(path: Path, data: dict[str, Any]) -> None:
    """The set as JSON with one session a line (a diff shows which sessions changed)."""
    head = {key: value for key, value in data.items() if key != "sessions"}
    lines = [json.dumps(s, separators=(",", ":")) for s in data["sessions"]]
    text = json.dumps(head, indent=1)[:-2] + ',\n "sessions": [\n  ' + ",\n  ".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n ]\n}\n", encoding="utf-8")


def build_session_set(
    photos: dict[str, PhotoSignals],
    labels: Labels,
    *,
    seed: int = 15,
    draws: int = 1200,
    per_person: int = 6,
    max_frames: int = 30,
) -> dict[str, Any]:
    """Genuine sessions and attacks made from them, deterministic for a seed.

    ``draws`` challenge lists (length 2 or 3, alternately; challenges and order uniform, as
    the service draws them) each go to a person who still has unused photos for it (fewest
    sessions first, at most ``per_person``); lists nobody can do are counted, not built. A
    genuine session is a neutral photo, then one photo per challenge; no photo is used twice.
    From each genuine session, one attack of every kind (``recorded``: its frames re-encoded,
    replayed against a fresh challenge list; what the digest check cannot stop).
    """
    rng = random.Random(seed)  # noqa: S311  (a reproducible set, not a secret)
    pools: dict[str, dict[Role, list[str]]] = {}
    for photo in sorted(single_face(photos), key=lambda p: p.name):
        person = photo.name.split("/")[0]
        for role in sorted(photo_roles(photo, labels)):
            pools.setdefault(person, {}).setdefault(role, []).append(photo.name)
    used: set[str] = set()
    sessions_of: dict[str, int] = {}
    genuine: list[SessionSpec] = []
    unbuildable: dict[str, int] = {}

    def free(person: str, role: Role) -> list[str]:
        return [n for n in pools[person].get(role, []) if n not in used]

    for draw in range(draws):
        challenges = _draw_challenges(rng, 2 + draw % 2)
        roles: tuple[Role, ...] = ("neutral", *challenges)
        able = [
            person
            for person in sorted(pools)
            if sessions_of.get(person, 0) < per_person and _can_fill(free, person, roles)
        ]
        if not able:
            key = ",".join(challenges)
            unbuildable[key] = unbuildable.get(key, 0) + 1
            continue
        fewest = min(sessions_of.get(p, 0) for p in able)
        person = rng.choice([p for p in able if sessions_of.get(p, 0) == fewest])
        files = []
        for role in roles:
            name = rng.choice([n for n in free(person, role) if n not in files])
            files.append(name)
        used.update(files)
        sessions_of[person] = sessions_of.get(person, 0) + 1
        genuine.append(
            SessionSpec(
                f"genuine-{len(genuine) + 1:04d}",
                "genuine",
                person,
                challenges,
                tuple(FrameSpec(f) for f in files),
            )
        )

    attacks: list[SessionSpec] = []
    for session in genuine:
        attacks.extend(_attacks(rng, session, pools, max_frames))
    return {
        "about": "Liveness sessions from LFW photos (facesvc eval liveness --rebuild-set). A "
        "frame is a file under lfw/lfw-deepfunneled/, sent as its bytes, or [file, "
        "jpeg_quality, scale, dx, dy]: decoded, scaled, shifted by whole pixels and JPEG-"
        "encoded again. Kinds: genuine (a neutral photo, then one per challenge, of one "
        "person); same_photo (the first photo's bytes again); still_photo (the first photo "
        "jittered, a print held still); other_person (one frame from someone else in the same "
        "state); wrong_order (the challenge photos shuffled); replay (a genuine session's "
        "frames sent again); recorded (its frames re-encoded against new challenges: not "
        "stoppable by these rules, reported apart). 'of': the genuine session an attack was "
        "made from.",
        "seed": seed,
        "draws": draws,
        "per_person": per_person,
        "unbuildable_draws": dict(sorted(unbuildable.items())),
        "sessions": [s.as_json() for s in genuine + attacks],
    }


def _can_fill(free: Callable[[str, Role], list[str]], person: str, roles: tuple[Role, ...]) -> bool:
    """Whether distinct unused photos exist for every role (greedy on the rarest first: a
    photo may hold two roles, e.g. turned with eyes closed)."""
    taken: set[str] = set()
    for role in sorted(roles, key=lambda r: len(free(person, r))):
        left = [n for n in free(person, role) if n not in taken]
        if not left:
            return False
        taken.add(left[0])
    return True


def _attacks(
    rng: random.Random,
    session: SessionSpec,
    pools: dict[str, dict[Role, list[str]]],
    max_frames: int,
) -> list[SessionSpec]:
    number = session.id.split("-")[1]
    frames = session.frames

    def attack(kind: SessionKind, attack_frames: tuple[FrameSpec, ...]) -> SessionSpec:
        return replace(
            session, id=f"{kind}-{number}", kind=kind, frames=attack_frames, of=session.id
        )

    # (a) the first photo sent again and again; (a2) as a camera sees a print of it held still
    still = frames[0].file
    same_photo = attack("same_photo", (FrameSpec(still),) * 3)
    still_photo = attack(
        "still_photo", tuple(FrameSpec(still, jitter(rng)) for _ in range(max_frames))
    )
    # (b) one frame (the first or a challenge's) shows someone else in the same state
    position = rng.randrange(len(frames))
    role: Role = "neutral" if position == 0 else session.challenges[position - 1]
    other = rng.choice(sorted(p for p in pools if p != session.person and pools[p].get(role)))
    swapped = list(frames)
    swapped[position] = FrameSpec(rng.choice(pools[other][role]))
    other_person = attack("other_person", tuple(swapped))
    # (c) the same photos, the challenges done in another order
    order = list(range(1, len(frames)))
    while order == sorted(order):
        rng.shuffle(order)
    wrong_order = attack("wrong_order", (frames[0], *(frames[i] for i in order)))
    # (d) this session's frames sent again, to a new session with the same challenges
    replayed = attack("replay", frames)
    # not an attack these rules can stop: a recording (new bytes) against new challenges
    recorded = replace(
        attack("recorded", tuple(FrameSpec(f.file, jitter(rng)) for f in frames)),
        challenges=_draw_challenges(rng, rng.choice((2, 3))),
    )
    return [same_photo, still_photo, other_person, wrong_order, replayed, recorded]
