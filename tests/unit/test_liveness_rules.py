"""The liveness checker's rules on hand-made signals (the API tests run them on real photos),
and the policy the settings build."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from facesvc.services.liveness.checker import (
    Challenge,
    FrameObservation,
    LivenessChecker,
    LivenessProgress,
)
from facesvc.services.liveness.service import LivenessPolicy
from facesvc.settings import Settings
from tests.support.liveness_frames import (
    CLOSED,
    LEFT,
    OPEN,
    SHUT,
    SOMEONE_ELSE,
    WIDE,
    T,
    frame,
    run,
    shows,
)


@pytest.mark.parametrize(
    "challenges",
    [
        ["turn_left", "blink", "open_mouth"],
        ["open_mouth", "turn_right", "turn_left"],
        ["blink", "turn_right"],
    ],
)
def test_challenges_done_in_order_after_rest_pass(challenges: list[Challenge]) -> None:
    frames = [frame()]
    for challenge in challenges:
        frames += [shows(challenge), frame()]
    result = run(challenges, frames)
    assert result.status == "passed"
    assert result.done == len(challenges)


def test_a_movement_without_its_rest_state_first_does_not_count() -> None:
    # the first frame already turned: no frontal face was seen before it
    result = run(["turn_left", "blink"], [frame(yaw=LEFT), frame(eyes=CLOSED)])
    assert result.status == "in_progress"
    assert result.done == 0


def test_a_later_challenge_first_fails_but_a_stray_blink_does_not() -> None:
    result = run(["turn_left", "open_mouth"], [frame(), frame(mouth=WIDE)])
    assert (result.status, result.reason) == ("failed", "wrong-order")
    result = run(["turn_left", "blink"], [frame(), frame(eyes=CLOSED), frame(yaw=LEFT)])
    assert result.status == "in_progress"
    assert result.done == 1  # the blink before its turn did not count, nor fail
    # a movement no challenge asked for is not held against the person
    result = run(["turn_left", "blink"], [frame(), frame(mouth=WIDE), frame(yaw=LEFT)])
    assert result.done == 1


def test_identity_faces_and_replays() -> None:
    result = run(["turn_left"], [frame(), frame(yaw=LEFT, who=SOMEONE_ELSE)])
    assert result.reason == "different-person"
    result = run(["turn_left"], [frame(), frame(faces=2)])
    assert result.reason == "multiple-faces"
    result = run(["turn_left"], [frame(tag="same"), frame(tag="same")])
    assert result.reason == "no-motion"
    replay = frame(yaw=LEFT)
    replay = FrameObservation(
        replay.faces, replay.signals, replay.embedding, replay.digest, replayed=True
    )
    assert run(["turn_left"], [frame(), replay]).reason == "replayed-frames"
    # frames without a face are counted, and change nothing else
    result = run(["turn_left"], [frame(), frame(faces=0), frame(yaw=LEFT)])
    assert (result.status, result.frames) == ("passed", 3)


def test_a_still_face_fails_as_no_motion_a_moving_one_does_not() -> None:
    jitter = np.random.default_rng(0)

    def still() -> FrameObservation:  # a printed photo held still: the mesh jitters a little
        return frame(
            eyes=OPEN + jitter.uniform(-0.005, 0.005),
            mouth=SHUT + jitter.uniform(-0.02, 0.02),
            yaw=jitter.uniform(-1.5, 1.5),
        )

    result = run(["turn_left"], [still() for _ in range(T.still_frames)])
    assert (result.status, result.reason) == ("failed", "no-motion")
    result = run(["turn_left"], [still() for _ in range(T.still_frames - 1)])
    assert result.status == "in_progress"
    # somebody who moves but never completes the challenge runs out of frames instead
    moving = [frame(yaw=(i % 2) * T.motion_yaw_deg * 1.2) for i in range(12)]
    result = run(["turn_left"], moving, max_frames=12)
    assert (result.status, result.reason) == ("failed", "challenges-not-completed")
    result = run(["turn_left"], [still() for _ in range(5)], max_frames=5)
    assert result.reason == "no-motion"


def test_step_refuses_an_ended_session() -> None:
    checker = LivenessChecker(T, 0.4, 60)
    progress = LivenessProgress(challenges=["turn_left"], status="failed", reason="no-motion")
    with pytest.raises(ValueError, match="ended"):
        checker.step(progress, frame(), None)


def test_policy_from_settings() -> None:
    policy = LivenessPolicy.from_settings(
        Settings(
            _env_file=None,
            liveness_challenges="blink, turn_left",
            liveness_challenge_count=2,
            liveness_turn_yaw_deg=25.0,
        )
    )
    assert policy.challenges == ("turn_left", "blink")
    assert policy.thresholds.turn_yaw_deg == 25.0
    assert policy.thresholds.eyes_closed_below == T.eyes_closed_below  # measured default
    with pytest.raises(ValueError, match="nod"):
        LivenessPolicy.from_settings(Settings(_env_file=None, liveness_challenges="nod,blink"))
    with pytest.raises(ValueError, match="COUNT"):
        LivenessPolicy.from_settings(
            Settings(_env_file=None, liveness_challenges="blink", liveness_challenge_count=2)
        )


def test_env_example_states_the_measured_thresholds() -> None:
    """The commented threshold lines of .env.example show the defaults the checker uses."""
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text(encoding="utf-8")
    found = re.findall(r"^# FACESVC_LIVENESS_([A-Z_]+)=(\S+)$", text, re.M)
    measured = [(name, value) for name, value in found if name != "MIN_SIMILARITY"]
    assert len(measured) == 7
    for name, value in measured:
        assert float(value) == getattr(T, name.lower()), name


def test_a_blink_must_drop_below_the_open_eyes_seen() -> None:
    """A still photo whose eyes sit between the cuts jitters across both when re-encoded: the
    drop from the most open eyes of the session must also be real."""
    barely_open = T.eyes_open_above + 0.005
    barely_shut = T.eyes_closed_below - 0.005
    assert barely_open - barely_shut < T.blink_min_drop
    result = run(["blink"], [frame(eyes=barely_open), frame(eyes=barely_shut)])
    assert result.status == "in_progress"
    result = run(["blink"], [frame(eyes=barely_open + 0.05), frame(eyes=barely_shut)])
    assert result.status == "passed"


def test_blink_is_offered_only_when_asked_for() -> None:
    assert "blink" not in LivenessPolicy().challenges
    assert "blink" not in LivenessPolicy.from_settings(Settings(_env_file=None)).challenges
