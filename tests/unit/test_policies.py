"""How settings reach the services: each policy's ``from_settings`` reads its own settings,
and the container's ``Policies`` builds them all once; the part that needs the embedder's
threshold and calibration is added when the models are loaded (no model is loaded here:
the threshold and the calibration come from the manifest and its files)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from facesvc.container import AppState, Policies, build_state
from facesvc.errors import NotReadyError
from facesvc.inference.pipeline import PipelineLimits
from facesvc.inference.quality import DEFAULT_THRESHOLDS
from facesvc.inference.registry import ModelFileError, ModelRegistry
from facesvc.security.crypto import generate_data_key
from facesvc.services.enrolment import EnrolmentOptions
from facesvc.services.liveness.service import LivenessPolicy
from facesvc.services.recognition.decisions import DecisionPolicy
from facesvc.services.recognition.lockout import LockoutPolicy
from facesvc.services.recognition.service import RecognitionPolicy
from facesvc.settings import Settings

CHANGED = {
    "max_image_pixels": 1_000_000,
    "detection_max_side": 640,
    "detection_pad_below": 0,
    "enrol_quality_gate": False,
    "store_face_crops": True,
    "enrol_second_face_ratio": 0.8,
    "lockout_max_failures": 7,
    "lockout_base_delay_s": 5.0,
    "lockout_max_delay_s": 60.0,
    "verify_far": 1e-4,
    "identify_far": 0.02,
    "identify_mode": "review",
    "verify_reveal_failed_scores": True,
    "liveness_max_frames": 30,
    "liveness_required": True,
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'facesvc.db'}",
        encryption_key=generate_data_key("t1"),
        attributes=False,
        **CHANGED,  # type: ignore[arg-type]
    )


@pytest.fixture
async def state(settings: Settings) -> AppState:
    """The service's container as build_state leaves it: nothing loaded, nothing opened."""
    return build_state(settings)


def test_each_policy_reads_its_own_settings(settings: Settings) -> None:
    assert PipelineLimits.from_settings(settings) == PipelineLimits(1_000_000, 640, 0)
    assert EnrolmentOptions.from_settings(settings) == EnrolmentOptions(
        quality=None, keep_crops=True, second_face_ratio=0.8
    )
    gated = settings.model_copy(update={"enrol_quality_gate": True})
    assert EnrolmentOptions.from_settings(gated).quality is DEFAULT_THRESHOLDS
    assert LockoutPolicy.from_settings(settings) == LockoutPolicy(7, 5.0, 60.0)
    registry = ModelRegistry(settings)
    decisions = DecisionPolicy.from_settings(settings, registry)
    assert decisions == DecisionPolicy(
        registry.threshold, registry.calibration, identify_far=0.02, verify_far=1e-4
    )
    assert RecognitionPolicy.from_settings(settings, registry) == RecognitionPolicy(
        decisions,
        LockoutPolicy(7, 5.0, 60.0),
        reveal_failed_scores=True,
        identify_mode="review",
    )


def test_the_defaults_of_each_policy_are_the_settings_defaults() -> None:
    defaults = Settings(_env_file=None)
    assert EnrolmentOptions.from_settings(defaults) == EnrolmentOptions()
    assert LockoutPolicy.from_settings(defaults) == LockoutPolicy()
    assert LivenessPolicy.from_settings(defaults) == LivenessPolicy()


async def test_build_state_builds_every_policy_once(state: AppState, settings: Settings) -> None:
    policies = state.policies
    assert policies == Policies.from_settings(settings)
    assert policies.recognition is None  # needs the loaded embedder
    assert state.pipeline.limits is policies.pipeline
    assert policies.liveness.required
    assert policies.liveness.max_frames == 30


def test_unknown_liveness_challenges_are_refused_with_the_policies(settings: Settings) -> None:
    with pytest.raises(ValueError, match="FACESVC_LIVENESS_CHALLENGES"):
        build_state(settings.model_copy(update={"liveness_challenges": "nod"}))


async def test_the_models_add_the_recognition_policy_once(
    state: AppState, settings: Settings
) -> None:
    before = state.policies
    per_call = state.recognition_policy  # not set yet: built for this call
    assert per_call == RecognitionPolicy.from_settings(settings, state.registry)
    assert state.recognition_policy is not per_call
    state._add_model_policies()  # what load_models does once the models are loaded
    after = state.policies
    assert after.recognition == per_call
    assert after.pipeline is before.pipeline  # the settings' part is kept as it was
    assert after.enrolment is before.enrolment
    assert after.liveness is before.liveness
    assert state.recognition_policy is after.recognition  # the same object every time
    assert state.recognition_policy is state.recognition_policy


async def test_an_embedder_without_a_threshold_fails_recognition_not_start_up(
    state: AppState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_threshold(_registry: ModelRegistry) -> float:
        raise ModelFileError("embedder 'x' has no threshold: run `facesvc eval calibrate`")

    monkeypatch.setattr(ModelRegistry, "threshold", property(no_threshold))
    with caplog.at_level(logging.WARNING, logger="facesvc"):
        state._add_model_policies()
    assert state.policies.recognition is None
    assert "eval calibrate" in caplog.text
    # every recognition request: a 503 naming the command (tests/api/test_other_embedding_size.py)
    with pytest.raises(NotReadyError, match="eval calibrate"):
        _ = state.recognition_policy
