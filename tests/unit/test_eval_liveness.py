"""The liveness evaluation: one frame through the service's pipeline, the committed session
set (every photo there, attacks made from genuine sessions), and one genuine session of it
with each attack made from it, through the real models and the service's rules.

genuine-0001 (Maria Shriver: a neutral photo, then turned to her right, then to her left)
passes in docs/eval/liveness.json; its attacks are the set's same_photo-0001 ... replay-0001.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesvc.evaluation.liveness.replay import FrameObserver, run_session
from facesvc.evaluation.liveness.sessions import (
    ATTACK_KINDS,
    EXPECTED_REASONS,
    FrameSpec,
    Labels,
    SessionSpec,
    Transform,
    build_session_set,
    frame_bytes,
    transformed,
)
from facesvc.evaluation.liveness.signals import PhotoSignals
from facesvc.inference.pipeline import FacePipeline
from facesvc.services.liveness.checker import LivenessChecker, LivenessThresholds
from facesvc.services.liveness.frames import observe_frame
from facesvc.settings import PROJECT_ROOT

SET_FILE = PROJECT_ROOT / "docs" / "eval" / "liveness_set.json"
LABELS_FILE = PROJECT_ROOT / "docs" / "eval" / "liveness_labels.json"
SESSION = "0001"


@pytest.fixture(scope="module")
def sessions() -> dict[str, SessionSpec]:
    raw = json.loads(SET_FILE.read_text(encoding="utf-8"))
    return {s["id"]: SessionSpec.from_json(s) for s in raw["sessions"]}


def lfw_root(data_dir: Path) -> Path:
    return data_dir / "lfw" / "lfw-deepfunneled"


def checker(pipeline: FacePipeline) -> LivenessChecker:
    return LivenessChecker(LivenessThresholds(), pipeline.registry.threshold, max_frames=30)


async def test_observe_frame_finds_one_face_at_rest(
    pipeline: FacePipeline, sessions: dict[str, SessionSpec], data_dir: Path
) -> None:
    neutral = sessions[f"genuine-{SESSION}"].frames[0]
    data = frame_bytes(lfw_root(data_dir), neutral)
    frame = await observe_frame(pipeline, data)
    assert frame.faces == 1
    assert frame.signals is not None
    assert frame.embedding is not None
    assert np.linalg.norm(frame.embedding) == pytest.approx(1.0, abs=1e-3)
    t = LivenessThresholds()
    assert frame.signals.eye_openness > t.eyes_open_above
    assert frame.signals.mouth_openness < t.mouth_closed_below
    assert abs(frame.signals.pose.yaw) < t.frontal_yaw_deg
    again = await observe_frame(pipeline, data)
    assert len(frame.digest) == 64
    assert again.digest == frame.digest
    moved = await observe_frame(pipeline, transformed(data, Transform(85, 1.01, (1, 0))))
    assert moved.digest != frame.digest


async def test_genuine_session_passes_and_each_attack_on_it_fails(
    pipeline: FacePipeline, sessions: dict[str, SessionSpec], data_dir: Path
) -> None:
    root, rules = lfw_root(data_dir), checker(pipeline)
    observe = FrameObserver(pipeline)
    genuine = await run_session(root, sessions[f"genuine-{SESSION}"], rules, observe)
    assert genuine.passed, genuine
    assert genuine.min_similarity is not None
    assert genuine.min_similarity >= pipeline.registry.threshold
    for kind in ATTACK_KINDS:
        attack = sessions[f"{kind}-{SESSION}"]
        earlier = set(genuine.frame_digests) if kind == "replay" else set()
        outcome = await run_session(root, attack, rules, observe, earlier)
        assert not outcome.passed, outcome
        assert outcome.reason in EXPECTED_REASONS[kind], outcome
        if kind == "wrong_order":  # turned left while asked to turn right
            assert outcome.reason == "wrong-order"


def test_committed_set_loads_and_every_photo_exists(
    sessions: dict[str, SessionSpec], data_dir: Path
) -> None:
    root = lfw_root(data_dir)
    files = {f.file for s in sessions.values() for f in s.frames}
    assert sorted(f for f in files if not (root / f).is_file()) == []
    genuine = [s for s in sessions.values() if s.kind == "genuine"]
    assert len(genuine) >= 100
    used = [f.file for s in genuine for f in s.frames]
    assert len(used) == len(set(used)), "a photo is in two genuine sessions"
    for session in genuine:
        assert 2 <= len(session.challenges) <= 3
        assert len(session.frames) == len(session.challenges) + 1
        assert all(f.file.startswith(session.person + "/") for f in session.frames)
    for kind in ATTACK_KINDS:
        made = [s for s in sessions.values() if s.kind == kind]
        assert len(made) == len(genuine)
        assert all(s.of is not None and sessions[s.of].kind == "genuine" for s in made)
    labels = Labels.load(LABELS_FILE)
    blink_frames = {
        s.frames[1 + s.challenges.index("blink")].file for s in genuine if "blink" in s.challenges
    }
    assert blink_frames <= labels.eyes_closed


def photo(name: str, eye: float, mouth: float, yaw: float) -> PhotoSignals:
    vector = np.full(4, 0.5, np.float32)
    return PhotoSignals(name, 1, True, eye, mouth, yaw, 0.0, 0.0, yaw * 1.3, vector)


def test_session_set_is_built_the_same_for_a_seed_from_labelled_photos() -> None:
    photos = {}
    for person in ("Ann_A", "Bob_B", "Cy_C"):
        kinds = [
            ("neutral", 0.3, 0.02, 0.0),
            ("neutral", 0.29, 0.03, 2.0),
            ("left", 0.28, 0.05, 30.0),
            ("right", 0.28, 0.05, -30.0),
            ("mouth", 0.27, 0.6, 1.0),
            ("closed", 0.17, 0.05, 1.0),
        ]
        for number, (_, eye, mouth, yaw) in enumerate(kinds, start=1):
            name = f"{person}/{person}_{number:04d}.jpg"
            photos[name] = photo(name, eye, mouth, yaw)
    labels = Labels(
        eyes_closed=frozenset(n for n in photos if n.endswith("_0006.jpg")),
        mouth_open=frozenset(n for n in photos if n.endswith("_0005.jpg")),
        looked_at_eyes=frozenset(photos),
        looked_at_mouth=frozenset(photos),
        turn_detector_yaw_deg=25.0,
        neutral={"eye_min": 0.24, "mouth_max": 0.1, "yaw_max_deg": 6.0},
    )
    first = build_session_set(photos, labels, seed=3, draws=40, per_person=2)
    assert first == build_session_set(photos, labels, seed=3, draws=40, per_person=2)
    built = [SessionSpec.from_json(s) for s in first["sessions"]]
    genuine = [s for s in built if s.kind == "genuine"]
    assert 3 <= len(genuine) <= 6
    role_of = {"turn_left": "_0003", "turn_right": "_0004", "open_mouth": "_0005"}
    role_of["blink"] = "_0006"
    for session in genuine:
        assert session.frames[0].file.endswith(("_0001.jpg", "_0002.jpg"))
        for challenge, frame in zip(session.challenges, session.frames[1:], strict=True):
            assert frame.file.endswith(role_of[challenge] + ".jpg")
    still = next(s for s in built if s.kind == "still_photo")
    assert all(f.transform is not None for f in still.frames)
    assert FrameSpec.from_json(still.frames[0].as_json()) == still.frames[0]
