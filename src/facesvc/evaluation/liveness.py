"""Active liveness on LFW: the signals' distributions, a session set, and its pass rates.

Measured here, step by step (``facesvc eval liveness``):

1. every LFW photo's centre face (LFW's person): its face-mesh signals (eye and mouth
   openness, yaw) and embedding, cached in an SQLite file so reruns are instant;
2. the distributions (percentiles) the thresholds in ``LivenessThresholds`` were set from;
3. sessions built from those photos (``build_session_set``, a committed list of file names):
   genuine sequences of one person's photos, and attacks;
4. every session replayed frame by frame through ``observe_frame`` (the service's own frame
   analysis) and ``LivenessChecker`` (the service's own rules).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np

from facesvc.evaluation.cache import pipeline_keys
from facesvc.evaluation.identify import wilson_interval
from facesvc.evaluation.lfw import nearest_centre
from facesvc.evaluation.sqlite_cache import SqliteCache
from facesvc.inference.landmarks.signals import face_signals
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.quality import YAW_GAIN
from facesvc.inference.types import Detection
from facesvc.services.liveness.checker import (
    CHALLENGES,
    Challenge,
    FrameObservation,
    LivenessChecker,
    LivenessProgress,
    LivenessThresholds,
)
from facesvc.services.liveness.frames import observe_frame

_SIGNALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    name TEXT NOT NULL,          -- LFW-relative path
    pipeline TEXT NOT NULL,      -- detector, mesh and embedder keys
    faces INTEGER NOT NULL,      -- faces found; 0: no face (the rest NULL)
    centre_is_largest INTEGER,   -- the centre face is the one a session would measure
    eye REAL, mouth REAL, yaw REAL, pitch REAL, roll REAL,
    detector_yaw REAL,           -- from the detector's keypoints, not the mesh: a second opinion
    embedding BLOB,
    PRIMARY KEY (name, pipeline)
)
"""
_SIGNALS_INSERT = "INSERT OR REPLACE INTO signals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class PhotoSignals:
    """One photo's centre face (LFW's person): its mesh signals and embedding."""

    name: str
    faces: int
    centre_is_largest: bool = False
    eye: float = float("nan")
    mouth: float = float("nan")
    yaw: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")
    detector_yaw: float = float("nan")
    embedding: np.ndarray | None = None

    @property
    def found(self) -> bool:
        return self.faces > 0 and self.embedding is not None


def signals_key(pipeline: FacePipeline) -> str:
    detector, embedder = pipeline_keys(pipeline)
    mesh = pipeline.registry.mesh_spec
    return f"{detector}|{mesh.name}:{mesh.version}|{embedder}"


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class SignalCache(SqliteCache):
    """Measured photos in one SQLite file, keyed by (LFW-relative name, pipeline key)."""

    def __init__(self, path: Path, key: str) -> None:
        super().__init__(path, _SIGNALS_SCHEMA, _SIGNALS_INSERT)
        self.key = key

    def get_all(self) -> dict[str, PhotoSignals]:
        rows = self.read(
            "SELECT name, faces, centre_is_largest, eye, mouth, yaw, pitch, roll, detector_yaw, "
            "embedding FROM signals WHERE pipeline = ?",
            (self.key,),
        )
        out = {}
        for name, faces, largest, eye, mouth, yaw, pitch, roll, detector_yaw, blob in rows:
            if faces == 0:
                out[name] = PhotoSignals(name, 0)
                continue
            vector = np.frombuffer(blob, dtype=np.float32).copy()
            out[name] = PhotoSignals(
                name,
                int(faces),
                bool(largest),
                eye,
                mouth,
                yaw,
                pitch,
                roll,
                math.nan if detector_yaw is None else detector_yaw,
                vector,
            )
        return out

    def put(self, photo: PhotoSignals) -> None:
        self.write(
            (
                photo.name,
                self.key,
                photo.faces,
                int(photo.centre_is_largest),
                _or_none(photo.eye),
                _or_none(photo.mouth),
                _or_none(photo.yaw),
                _or_none(photo.pitch),
                _or_none(photo.roll),
                _or_none(photo.detector_yaw),
                None if photo.embedding is None else photo.embedding.astype(np.float32).tobytes(),
            )
        )


async def measure_photo(pipeline: FacePipeline, name: str, data: bytes) -> PhotoSignals:
    """The centre face's signals and embedding (as ``evaluation.lfw.centre_face`` picks it)."""
    image = await pipeline.decode(data)
    detections = await pipeline.detect(image)
    if not detections:
        return PhotoSignals(name, 0)
    centre = nearest_centre(detections, image.shape[1], image.shape[0])
    faces = await pipeline.landmarks(image, [centre], dense=True)
    (face,) = await pipeline.embed(image, faces)
    if face.mesh is None or face.embedding is None:  # unreachable: dense, embedded
        raise RuntimeError("the face has no mesh or embedding")
    signals = face_signals(face.mesh)
    return PhotoSignals(
        name,
        len(detections),
        centre is detections[0],
        signals.eye_openness,
        signals.mouth_openness,
        signals.pose.yaw,
        signals.pose.pitch,
        signals.pose.roll,
        detector_yaw(centre),
        face.embedding,
    )


def detector_yaw(detection: Detection) -> float:
    """Approximate yaw in degrees from BlazeFace's own keypoints (eyes, nose tip), not the
    mesh: the nose's offset from the eyes' midpoint along the eye line, over the eye distance,
    through the five-point gain of ``inference.quality``. > 0: nose towards the image's right,
    the mesh's sign. NaN without keypoints."""
    points = detection.keypoints
    if points is None or len(points) < 3:
        return math.nan
    image_left_eye, image_right_eye, nose = (np.asarray(p, dtype=np.float64) for p in points[:3])
    across = image_right_eye - image_left_eye
    distance = float(np.hypot(*across))
    if distance < 1e-6:
        return math.nan
    offset = float((nose - (image_left_eye + image_right_eye) / 2.0) @ across) / distance**2
    return math.degrees(math.atan(YAW_GAIN * offset))


async def measure_photos(
    pipeline: FacePipeline,
    root: Path,
    names: Iterable[str],
    cache: SignalCache | None,
    *,
    progress: Callable[[int], None] | None = None,
    skipped: Callable[[int], None] | None = None,
    concurrency: int = 4,
) -> dict[str, PhotoSignals]:
    """Every photo's centre face, from the cache when there (models load only if needed)."""
    names = list(dict.fromkeys(names))
    known = cache.get_all() if cache is not None else {}
    out = {name: known[name] for name in names if name in known}
    report = skipped or progress
    if out and report is not None:
        report(len(out))
    todo = [name for name in names if name not in out]
    if todo and not pipeline.registry.ready:
        await pipeline.registry.start()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with semaphore:
            data = await asyncio.to_thread((root / name).read_bytes)
            photo = await measure_photo(pipeline, name, data)
        out[name] = photo
        if cache is not None:
            cache.put(photo)
        if progress:
            progress(1)

    try:
        await asyncio.gather(*(one(name) for name in todo))
    finally:
        if cache is not None:
            cache.flush()
    return out


# ---- distributions ----------------------------------------------------------------------

PERCENTILES = (0.1, 0.5, 1, 2, 5, 10, 25, 50, 75, 90, 95, 98, 99, 99.5, 99.9)


def percentiles(values: Iterable[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return {}
    points = np.percentile(array, PERCENTILES)
    return {
        "count": int(array.size),
        **{f"p{p:g}": round(float(v), 4) for p, v in zip(PERCENTILES, points, strict=True)},
    }


def single_face(photos: dict[str, PhotoSignals]) -> list[PhotoSignals]:
    """Photos a session could use: exactly one face found (so it is LFW's person and the one
    ``observe_frame`` measures)."""
    return [p for p in photos.values() if p.faces == 1 and p.found]


# ---- the session set ----------------------------------------------------------------------

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


def _jitter(rng: random.Random) -> Transform:
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
        "still_photo", tuple(FrameSpec(still, _jitter(rng)) for _ in range(max_frames))
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
        attack("recorded", tuple(FrameSpec(f.file, _jitter(rng)) for f in frames)),
        challenges=_draw_challenges(rng, rng.choice((2, 3))),
    )
    return [same_photo, still_photo, other_person, wrong_order, replayed, recorded]


# ---- running sessions ---------------------------------------------------------------------


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
            row[kind] = _rate(sum(o.passed for o in mine), len(mine))
        rows.append(row)
    return rows


# ---- the report ---------------------------------------------------------------------------


def _rate(passed: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(passed, total)
    return {
        "sessions": total,
        "passed": passed,
        "pass_rate": round(passed / total, 4) if total else None,
        "ci95": [round(low, 4), round(high, 4)],
    }


def _counts(values: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        if value is not None:
            out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items(), key=lambda item: (-item[1], item[0])))


def threshold_evidence(
    photos: dict[str, PhotoSignals], labels: Labels, t: LivenessThresholds
) -> dict[str, Any]:
    """How each threshold splits LFW's one-face photos and the photos labelled by eye."""
    one = single_face(photos)

    def share(condition: Callable[[PhotoSignals], bool], among: list[PhotoSignals]) -> Any:
        hits = sum(condition(p) for p in among)
        return {
            "of": len(among),
            "count": hits,
            "share": round(hits / len(among), 4) if among else None,
        }

    closed = [p for p in one if p.name in labels.eyes_closed]
    looked_open_eyes = [p for p in one if p.name in labels.looked_at_eyes - labels.eyes_closed]
    wide = [p for p in one if p.name in labels.mouth_open]
    looked_not_wide = [p for p in one if p.name in labels.looked_at_mouth - labels.mouth_open]
    frontal = [p for p in one if abs(p.detector_yaw) < t.frontal_yaw_deg]
    turned = [p for p in one if abs(p.detector_yaw) >= labels.turn_detector_yaw_deg]
    return {
        "eyes_closed_below": {
            "lfw_below": share(lambda p: p.eye < t.eyes_closed_below, one),
            "closed_by_eye_below": share(lambda p: p.eye < t.eyes_closed_below, closed),
            "looked_at_open_below": share(lambda p: p.eye < t.eyes_closed_below, looked_open_eyes),
        },
        "eyes_open_above": {"lfw_above": share(lambda p: p.eye > t.eyes_open_above, one)},
        "mouth_open_above": {
            "lfw_above": share(lambda p: p.mouth > t.mouth_open_above, one),
            "open_by_eye_above": share(lambda p: p.mouth > t.mouth_open_above, wide),
            "looked_at_not_open_above": share(
                lambda p: p.mouth > t.mouth_open_above, looked_not_wide
            ),
        },
        "mouth_closed_below": {"lfw_below": share(lambda p: p.mouth < t.mouth_closed_below, one)},
        "frontal_yaw_deg": {
            "lfw_within": share(lambda p: abs(p.yaw) < t.frontal_yaw_deg, one),
            "detector_frontal_within": share(lambda p: abs(p.yaw) < t.frontal_yaw_deg, frontal),
        },
        "turn_yaw_deg": {
            "lfw_beyond": share(lambda p: abs(p.yaw) > t.turn_yaw_deg, one),
            "detector_turned_beyond_same_side": share(
                lambda p: p.yaw * math.copysign(1.0, p.detector_yaw) > t.turn_yaw_deg, turned
            ),
        },
    }


Spread = tuple[float, float, float]  # range of eye openness, mouth openness, yaw


def _spread(observations: Iterable[FrameObservation]) -> Spread | None:
    vectors = np.asarray(
        [
            (o.signals.eye_openness, o.signals.mouth_openness, o.signals.pose.yaw)
            for o in observations
            if o.signals is not None
        ]
    )
    if len(vectors) < 2:
        return None
    spread = vectors.max(axis=0) - vectors.min(axis=0)
    return float(spread[0]), float(spread[1]), float(spread[2])


async def challenge_photo_jitter(
    root: Path,
    sessions: list[SessionSpec],
    observe: Callable[[bytes], Awaitable[FrameObservation]],
    *,
    photos: int = 60,
    copies: int = 20,
    seed: int = 15,
    progress: Callable[[int], None] | None = None,
) -> list[Spread]:
    """The still_photo attack's jitter measured on challenge photos too (turned heads, open
    mouths, closed eyes move more than the neutral first frames): ``copies`` jittered copies
    of the first ``photos`` challenge frames of the genuine sessions."""
    rng = random.Random(seed)  # noqa: S311  (reproducible, not a secret)
    files = [f.file for s in sessions if s.kind == "genuine" for f in s.frames[1:]][:photos]
    spreads = []
    for file in files:
        data = await asyncio.to_thread((root / file).read_bytes)
        copies_seen = []
        for _ in range(copies):
            copy = await asyncio.to_thread(transformed, data, _jitter(rng))
            copies_seen.append(await observe(copy))
        if (spread := _spread(copies_seen)) is not None:
            spreads.append(spread)
        if progress:
            progress(1)
    return spreads


def still_jitter(
    outcomes: list[SessionOutcome],
    seen: dict[str, FrameObservation],
    challenge_spreads: list[Spread],
    t: LivenessThresholds,
) -> dict[str, Any]:
    """How far one photo's signals move across re-encoded, rescaled, shifted copies: the
    range of every signal over a still_photo session (neutral first frames) and over the
    copies of challenge photos. ``motion_*`` must stay above it for a print held still to
    count as not moving, and the gap between a rest and an active cut should too, or a still
    photo whose signal sits in the gap may cross both by jitter alone."""
    neutral = [
        spread
        for o in outcomes
        if o.kind == "still_photo" and (spread := _spread(seen[d] for d in o.digests)) is not None
    ]

    def summary(spreads: list[Spread]) -> dict[str, Any]:
        if not spreads:
            return {}
        array = np.asarray(spreads)
        moved = (
            (array[:, 0] > t.motion_eyes)
            | (array[:, 1] > t.motion_mouth)
            | (array[:, 2] > t.motion_yaw_deg)
        )
        return {
            "photos": len(spreads),
            "range_eyes": percentiles(array[:, 0]),
            "range_mouth": percentiles(array[:, 1]),
            "range_yaw_deg": percentiles(array[:, 2]),
            "over_a_motion_threshold": int(moved.sum()),
        }

    return {
        "neutral_prints": summary(neutral),
        "challenge_photos": summary(challenge_spreads),
        "rest_to_active_gap": {
            "eyes": round(t.eyes_open_above - t.eyes_closed_below, 4),
            "mouth": round(t.mouth_open_above - t.mouth_closed_below, 4),
            "yaw_deg": round(t.turn_yaw_deg - t.frontal_yaw_deg, 4),
        },
    }


def liveness_report(
    photos: dict[str, PhotoSignals],
    labels: Labels,
    sessions: list[SessionSpec],
    outcomes: list[SessionOutcome],
    observer: FrameObserver,
    checker: LivenessChecker,
    challenge_spreads: list[Spread],
) -> dict[str, Any]:
    t = checker.t
    one = single_face(photos)
    by_kind: dict[str, list[SessionOutcome]] = {}
    for outcome in outcomes:
        by_kind.setdefault(outcome.kind, []).append(outcome)
    specs = {s.id: s for s in sessions}
    genuine = by_kind.get("genuine", [])
    per_challenge = {
        challenge: _rate(
            sum(o.passed for o in genuine if challenge in specs[o.id].challenges),
            sum(challenge in specs[o.id].challenges for o in genuine),
        )
        for challenge in CHALLENGES
    }
    attacks = {
        kind: {
            **_rate(sum(o.passed for o in by_kind.get(kind, [])), len(by_kind.get(kind, []))),
            "reasons": _counts(o.reason for o in by_kind.get(kind, [])),
            "expected_reasons": list(EXPECTED_REASONS[kind]),
        }
        for kind in ATTACK_KINDS
    }
    recorded = by_kind.get("recorded", [])
    ms = np.asarray(observer.seconds) * 1000.0
    return {
        "signals": {
            "photos": len(photos),
            "no_face": sum(not p.found for p in photos.values()),
            "several_faces": sum(p.faces > 1 for p in photos.values()),
            "one_face": len(one),
            "eye_openness": percentiles(p.eye for p in one),
            "mouth_openness": percentiles(p.mouth for p in one),
            "yaw_deg": percentiles(p.yaw for p in one),
            "abs_yaw_deg": percentiles(abs(p.yaw) for p in one),
            "detector_yaw_deg": percentiles(p.detector_yaw for p in one),
            "yaw_correlation_mesh_detector": round(
                float(np.corrcoef([p.yaw for p in one], [p.detector_yaw for p in one])[0, 1]), 4
            ),
            "eye_openness_closed_by_eye": percentiles(
                p.eye for p in one if p.name in labels.eyes_closed
            ),
            "mouth_openness_open_by_eye": percentiles(
                p.mouth for p in one if p.name in labels.mouth_open
            ),
        },
        "labelled_by_eye": {
            "eyes_looked_at": len(labels.looked_at_eyes),
            "eyes_closed": len(labels.eyes_closed),
            "mouth_looked_at": len(labels.looked_at_mouth),
            "mouth_open": len(labels.mouth_open),
            "turn_detector_yaw_deg": labels.turn_detector_yaw_deg,
            "neutral": labels.neutral,
        },
        "thresholds": {**asdict(t), "min_similarity": checker.min_similarity},
        "max_frames": checker.max_frames,
        "threshold_evidence": threshold_evidence(photos, labels, t),
        "sessions": _counts(s.kind for s in sessions),
        "genuine": {
            **_rate(sum(o.passed for o in genuine), len(genuine)),
            "target": 0.95,
            "reasons": _counts(o.reason for o in genuine),
            "stuck_at": _counts(o.stuck_at for o in genuine),
            "by_challenge": per_challenge,
            "by_length": {
                str(n): _rate(
                    sum(o.passed for o in genuine if len(specs[o.id].challenges) == n),
                    sum(len(specs[o.id].challenges) == n for o in genuine),
                )
                for n in (2, 3)
            },
            "min_similarity_to_first_frame": percentiles(
                o.min_similarity for o in genuine if o.min_similarity is not None
            ),
            "failed": [
                {
                    "id": o.id,
                    "challenges": list(specs[o.id].challenges),
                    "reason": o.reason,
                    "stuck_at": o.stuck_at,
                    "frames": o.trace,
                }
                for o in genuine
                if not o.passed
            ],
        },
        "attacks": attacks,
        "attack_target": 0,
        "not_stopped_by_these_rules": {
            "recorded": {
                **_rate(sum(o.passed for o in recorded), len(recorded)),
                "reasons": _counts(o.reason for o in recorded),
                "what": "a passed genuine session's frames re-encoded (new bytes, so the "
                "replay check cannot know them) and sent to a new session with freshly drawn "
                "challenges: a recording passes whenever the new challenges occur in it in "
                "order",
            }
        },
        "still_photo_jitter": still_jitter(outcomes, observer.seen, challenge_spreads, t),
        "timing": {
            "frames_computed": int(ms.size),
            "ms_per_frame_median": round(float(np.median(ms)), 1) if ms.size else None,
            "ms_per_frame_p90": round(float(np.percentile(ms, 90)), 1) if ms.size else None,
            "ms_per_frame_mean": round(float(ms.mean()), 1) if ms.size else None,
            "how": "observe_frame per frame, one frame at a time (decode, detect, mesh, embed)",
        },
    }
