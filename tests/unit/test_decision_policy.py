"""DecisionPolicy: thresholds from the calibration, for 1:1 and for 1:N by gallery size."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from facesvc.errors import NotCalibratedError
from facesvc.inference.calibration import ScoreCalibration
from facesvc.services.recognition.decisions import DecisionPolicy

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "calibration" / "facenet.json"


@pytest.fixture(scope="module")
def calibration() -> ScoreCalibration:
    return ScoreCalibration.load(COMMITTED)


def test_one_to_one_default_and_far_target(calibration: ScoreCalibration) -> None:
    policy = DecisionPolicy(0.40, calibration)
    assert policy.one_to_one(None) == 0.40
    assert policy.one_to_one(0.4) == 0.40  # a loose target cannot lower the bar
    strict, stricter = policy.one_to_one(1e-4), policy.one_to_one(1e-6)
    assert 0.40 < strict < stricter < 1.0
    assert calibration.far_at(strict) <= 1e-4 * 1.01
    assert policy.false_match_rate(0.40) == pytest.approx(calibration.far_at(0.40))


def test_verification_decides_at_the_verify_rate_and_only_gets_stricter(
    calibration: ScoreCalibration,
) -> None:
    policy = DecisionPolicy(0.40, calibration, verify_far=1e-3)
    default = policy.verification(None)
    assert default == pytest.approx(calibration.threshold_for_far(1e-3))
    assert calibration.far_at(default) <= 1e-3 * 1.001
    assert policy.one_to_one(None) == 0.40  # compare keeps the floor
    assert policy.verification(0.05) == default  # a request cannot loosen it
    assert policy.verification(1e-5) == pytest.approx(calibration.threshold_for_far(1e-5))
    assert DecisionPolicy(0.9, calibration, verify_far=1e-3).verification(None) == 0.9  # floor
    # without a calibration, the floor (no rate to turn into a threshold)
    assert DecisionPolicy(0.40, None, verify_far=1e-3).verification(None) == 0.40


def test_one_to_many_grows_with_the_gallery_and_never_undercuts_one_to_one(
    calibration: ScoreCalibration,
) -> None:
    policy = DecisionPolicy(0.40, calibration, identify_far=0.01)
    sizes = [1, 10, 100, 1_000, 10_000, 100_000]
    thresholds = [policy.one_to_many(n, None) for n in sizes]
    assert thresholds[0] == 0.40  # at N=1 the calibrated one (0.388) is below 1:1
    assert all(a <= b for a, b in itertools.pairwise(thresholds))
    assert thresholds[-1] > 0.8
    for n, t in zip(sizes[2:], thresholds[2:], strict=True):
        # the promise: an unknown probe against n faces passes with probability ~<= 1%
        assert policy.false_match_rate(t, n) <= 0.0105
    # a request's target can only make identification stricter, never looser
    assert policy.one_to_many(1, 0.05) == 0.40
    assert policy.one_to_many(1_000, 0.5) == policy.one_to_many(1_000, None)
    assert policy.one_to_many(1_000, 1e-4) > policy.one_to_many(1_000, None)


def test_probability_is_monotone_and_none_without_a_score(
    calibration: ScoreCalibration,
) -> None:
    policy = DecisionPolicy(0.40, calibration)
    scores = np.linspace(-0.2, 1.0, 25)
    probabilities = [policy.probability(float(s)) for s in scores]
    assert all(p is not None and 0.0 <= p <= 1.0 for p in probabilities)
    assert probabilities == sorted(probabilities)  # type: ignore[type-var]
    assert policy.probability(None) is None


def test_without_a_calibration_far_targets_are_refused() -> None:
    policy = DecisionPolicy(0.40, None)
    assert policy.one_to_one(None) == 0.40
    assert policy.one_to_many(10_000, None) == 0.40  # nothing to scale with: the 1:1 one
    assert policy.probability(0.9) is None
    assert policy.false_match_rate(0.4) is None
    with pytest.raises(NotCalibratedError):
        policy.one_to_one(1e-3)
    with pytest.raises(NotCalibratedError):
        policy.one_to_many(10, 1e-3)
