"""How settings reach the services: each policy's ``from_settings`` reads its own settings
(no model is loaded here: the threshold and the calibration come from the manifest and its
files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesvc.inference.pipeline import PipelineLimits
from facesvc.inference.quality import DEFAULT_THRESHOLDS
from facesvc.inference.registry import ModelRegistry
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
