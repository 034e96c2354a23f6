"""Open-set identification arithmetic: protocol, rank-k, DIR and FAR, threshold at a FAR."""

from __future__ import annotations

import numpy as np
import pytest

from facesvc.evaluation.identify import (
    LOWEST_SCORE,
    ProbeScores,
    build_protocol,
    calibrated_report,
    dir_far,
    keep_probes,
    open_set_report,
    rank_k,
    score_probes,
    select_people,
    threshold_at_far,
    wilson_interval,
)
from facesvc.inference.calibration import ScoreCalibration


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_protocol_enrols_first_image_with_a_face_and_keeps_singletons_as_distractors() -> None:
    people = {
        "ann": ["ann/1", "ann/2", "ann/3"],
        "bob": ["bob/1", "bob/2"],  # no face in bob/1: enrol bob/2, no probe left
        "cat": ["cat/1"],
        "dan": ["dan/1", "dan/2"],  # no face anywhere: not enrolled
    }
    has_face = {name: True for images in people.values() for name in images}
    has_face.update({"bob/1": False, "dan/1": False, "dan/2": False})
    protocol = build_protocol(people, has_face)
    assert protocol.enrolled == {"ann": "ann/1", "bob": "bob/2"}
    assert protocol.enrolment_fallbacks == 1
    assert protocol.not_enrolled == ["dan"]
    assert sorted(protocol.probes, key=str) == sorted(
        [("ann/2", "ann"), ("ann/3", "ann"), ("bob/1", "bob"), ("cat/1", None)], key=str
    )
    assert protocol.genuine_probes == 3
    assert protocol.distractor_probes == 1


def test_select_people_takes_both_kinds() -> None:
    people = {f"p{i}": [f"p{i}/1"] * (1 + i % 2) for i in range(10)}
    chosen = select_people(people, 2)
    assert sorted(chosen) == ["p0", "p1", "p2", "p3"]
    assert select_people(people, None) == people


@pytest.fixture
def scores() -> ProbeScores:
    gallery = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])  # a, b, c
    probes = [
        unit(1, 0.1, 0),  # a: right, best 0.995
        unit(0.2, 1, 0.5),  # b: right, best 0.880
        unit(0, 0.9, 1),  # c: right, best 0.743 (b 0.669)
        unit(1, 0, 0.9),  # c: wrong, a 0.743 beats c 0.669: own rank 2
        None,  # a without a face: an error
        unit(3, 4, 0),  # distractor, best 0.8 (b)
        unit(1, 1, 1),  # distractor, best 0.577
        unit(-1, -1, -1),  # distractor, best -0.577
        None,  # distractor without a face: never a false match
    ]
    labels = ["a", "b", "c", "c", "a", None, None, None, None]
    return score_probes(gallery, ["a", "b", "c"], probes, labels)


def test_rank_and_dir_far(scores: ProbeScores) -> None:
    assert list(scores.rank[:5]) == [1, 1, 1, 2, 0]
    assert list(scores.top) == [0, 1, 2, 0, -1, 1, 0, 0, -1]  # ties: the first gallery entry
    assert scores.best[0] == pytest.approx(0.995, abs=1e-3)
    assert rank_k(scores, 1) == pytest.approx(3 / 5)
    assert rank_k(scores, 2) == pytest.approx(4 / 5)
    # 0.85: a and b pass, c (0.743) does not; the best distractor (0.8) does not
    assert dir_far(scores, 0.85) == pytest.approx((2 / 5, 0.0))
    # 0.7: c passes too (the wrong c never counts), and one distractor of four
    dir_, far = dir_far(scores, 0.7)
    assert dir_ == pytest.approx(3 / 5)
    assert far == pytest.approx(1 / 4)


def test_threshold_at_far_counts_failed_distractors_as_rejections(scores: ProbeScores) -> None:
    best = np.sort(scores.best[~scores.genuine & scores.valid])[::-1]
    strict = threshold_at_far(scores, 0.0)
    assert strict > best[0]
    assert dir_far(scores, strict)[1] == 0.0
    # one of four distractors may pass: the threshold sits just above the second best
    loose = threshold_at_far(scores, 0.25)
    assert best[1] < loose <= best[0]
    assert dir_far(scores, loose) == pytest.approx((3 / 5, 0.25))
    # all may pass: every distractor with a face does, the one without a face still does not
    assert threshold_at_far(scores, 1.0) == LOWEST_SCORE
    assert dir_far(scores, LOWEST_SCORE)[1] == pytest.approx(3 / 4)


def test_report_has_the_figures(scores: ProbeScores) -> None:
    report = open_set_report(scores, 0.85, fars=(0.25,))
    assert report["genuine_probes"] == 5
    assert report["distractor_probes"] == 4
    assert report["genuine_probes_without_face"] == 1
    assert report["distractor_probes_without_face"] == 1
    assert report["rank_1"] == pytest.approx(0.6)
    assert report["at_threshold"] == {"threshold": 0.85, "dir": pytest.approx(0.4), "far": 0.0}
    assert report["at_far"] == [
        {
            "far_target": 0.25,
            "threshold": pytest.approx(0.577, abs=1e-3),
            "dir": pytest.approx(0.6),
            "far": 0.25,
        }
    ]


def test_dropping_a_distractor_changes_only_the_distractor_side(scores: ProbeScores) -> None:
    keep = np.ones(len(scores.best), bool)
    keep[5] = False  # the distractor at 0.8
    fewer = keep_probes(scores, keep)
    assert int((~fewer.genuine).sum()) == 3
    assert rank_k(fewer, 1) == rank_k(scores, 1)
    assert dir_far(fewer, 0.7) == pytest.approx((3 / 5, 0.0))


def test_calibrated_threshold_predicts_and_measures_unknowns(scores: ProbeScores) -> None:
    # impostor scores spread evenly over [-1, 0.8]: FAR(t) = (0.8 - t) / 1.8 there
    calibration = ScoreCalibration.from_scores(
        np.full(10, 0.9), np.linspace(-1.0, 0.8, 180_001), space="test"
    )
    (row,) = calibrated_report(scores, calibration, gallery_faces=3, fars=(0.1,))
    far1 = 1 - 0.9 ** (1 / 3)  # per comparison, so that one of 3 passes with probability 0.1
    assert row["threshold"] == pytest.approx(0.8 - 1.8 * far1, abs=2e-5)
    assert row["per_comparison_far"] == pytest.approx(far1, rel=1e-3)
    assert row["predicted_far"] == pytest.approx(0.1, rel=1e-3)
    # t ~ 0.738: the distractor at 0.8 passes (1 of 4; the one without a face never does);
    # a (0.995), b (0.880) and c (0.743) are identified
    assert row["far"] == pytest.approx(0.25)
    assert row["false_matches"] == 1
    assert row["dir"] == pytest.approx(3 / 5)
    assert row["far_95"][0] < 0.25 < row["far_95"][1]  # type: ignore[index]
    # a bigger gallery needs a higher threshold for the same FAR: c no longer passes
    (bigger,) = calibrated_report(scores, calibration, gallery_faces=30, fars=(0.1,))
    assert bigger["threshold"] > row["threshold"]  # type: ignore[operator]
    assert bigger["dir"] == pytest.approx(2 / 5)


def test_wilson_interval() -> None:
    low, high = wilson_interval(1, 4)
    assert low == pytest.approx(0.0456, abs=1e-4)
    assert high == pytest.approx(0.6994, abs=1e-4)
    assert wilson_interval(0, 100)[0] == 0.0
    assert 0.0 < wilson_interval(0, 100)[1] < 0.05
    assert wilson_interval(0, 0) == (0.0, 1.0)
