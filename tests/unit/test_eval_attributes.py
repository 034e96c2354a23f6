"""The labelled attribute set and the figures `facesvc eval attributes` computes from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from facesvc.evaluation.attributes import (
    AttributeSample,
    Prediction,
    age_report,
    expression_report,
    gender_report,
    read_attribute_set,
)
from facesvc.inference.attributes.models import (
    AgeEstimate,
    FaceAttributes,
    LabelEstimate,
)

LABELS = Path(__file__).parent.parent.parent / "docs" / "eval" / "attributes_set.csv"


def test_the_committed_set_is_large_enough_and_well_formed() -> None:
    samples = read_attribute_set(LABELS)
    assert len(samples) >= 200
    assert len({s.file for s in samples}) == len(samples)
    assert sum(s.expression is not None for s in samples) >= 60
    assert {s.gender for s in samples} == {"female", "male"}
    assert all(s.age == 2003 - s.born for s in samples)
    assert any(s.age < 20 for s in samples)
    assert all(s.file.startswith("lfw-deepfunneled/") for s in samples)


def test_every_labelled_photo_is_in_lfw(data_dir: Path) -> None:
    missing = [
        s.file for s in read_attribute_set(LABELS) if not (data_dir / "lfw" / s.file).exists()
    ]
    assert missing == []


def test_a_bad_label_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    path.write_text("file,gender,born,age,expression\na.jpg,male,1950,53,smug\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown expression"):
        read_attribute_set(path)


def _prediction(
    gender: str, age: int, expression: str | None, said_gender: str, said_age: float, said: str
) -> Prediction:
    sample = AttributeSample("x.jpg", gender, 2003 - age, age, expression)
    found = FaceAttributes(
        age=AgeEstimate(years=said_age, low=said_age - 2, high=said_age + 2),
        gender=LabelEstimate(said_gender, 0.9, {}),
        expression=LabelEstimate(said, 0.8, {}),
    )
    return Prediction(sample, found, 0.01)


def test_reports_count_what_they_say() -> None:
    scored = [
        _prediction("female", 15, "happy", "female", 25.0, "happy"),  # 10 years over
        _prediction("male", 70, "neutral", "female", 60.0, "sad"),  # gender wrong, 10 under
        _prediction("male", 35, None, "male", 36.0, "happy"),  # in the interval
        _prediction("female", 33, "neutral", "female", 33.0, "neutral"),
    ]
    gender = gender_report(scored)
    assert gender["accuracy"] == 0.75
    assert gender["by_gender"]["male"] == {"faces": 2, "accuracy": 0.5}
    assert [m["labelled"] for m in gender["mistakes"]] == ["male"]
    age = age_report(scored)
    assert age["mae"] == pytest.approx((10 + 10 + 1 + 0) / 4)
    assert age["by_age_band"]["0-19"] == {"faces": 1, "mae": 10.0, "mean_error": 10.0}
    assert age["by_age_band"]["70+"]["mean_error"] == -10.0
    assert age["interval_80_coverage"] == 0.5
    expression = expression_report(scored)
    assert expression["faces_labelled"] == 3
    assert expression["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert expression["confusion"]["neutral"] == {"sad": 1, "neutral": 1}
    assert expression["happy_vs_not_agreement"] == 1.0
