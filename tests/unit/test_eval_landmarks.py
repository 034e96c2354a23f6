"""Landmark error arithmetic: CUHK list parsing, box overlap, NME and its summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesvc.evaluation.boxes import best_overlap, iou
from facesvc.evaluation.landmarks import nme, point_errors, summarise_errors
from facesvc.inference.cuhk import read_cuhk
from facesvc.inference.types import Box

TRUTH = np.array([[100, 100], [140, 100], [120, 120], [105, 140], [135, 140]], dtype=float)


def test_read_cuhk_parses_box_points_and_windows_paths(tmp_path: Path) -> None:
    listing = tmp_path / "testImageList.txt"
    listing.write_text(
        "lfw_5590\\Aaron_Eckhart_0001.jpg 84 161 92 169 106.25 107.75 146.75 112.25 "
        "125.25 142.75 105.25 157.75 139.75 161.75\n\n",
        encoding="utf-8",
    )
    (sample,) = read_cuhk(listing)
    assert sample.image == "lfw_5590/Aaron_Eckhart_0001.jpg"
    assert sample.box == Box(84, 92, 77, 77)  # left right top bottom -> x y w h
    assert sample.points.shape == (5, 2)
    np.testing.assert_allclose(sample.points[1], [146.75, 112.25])  # right eye (x, y)
    np.testing.assert_allclose(sample.points[4], [139.75, 161.75])  # mouth right


def test_read_cuhk_rejects_short_lines(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg 1 2 3 4 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="15 fields"):
        read_cuhk(listing)


def test_nme_is_normalised_by_the_labelled_eye_distance() -> None:
    assert nme(TRUTH, TRUTH) == 0.0
    shifted = TRUTH + np.array([4.0, 0.0])  # every point 4 px off, eyes 40 px apart
    assert nme(shifted, TRUTH) == pytest.approx(0.1)
    one_off = TRUTH.copy()
    one_off[2] += [0.0, 20.0]  # only the nose, by half the eye distance
    errors = point_errors(one_off, TRUTH)
    np.testing.assert_allclose(errors, [0, 0, 0.5, 0, 0])
    assert nme(one_off, TRUTH) == pytest.approx(0.1)
    # scale invariant: the same face twice as big gives the same error
    assert nme(one_off * 2, TRUTH * 2) == pytest.approx(0.1)


def test_nme_refuses_coincident_eyes() -> None:
    truth = TRUTH.copy()
    truth[1] = truth[0]
    with pytest.raises(ValueError, match="inter-ocular"):
        nme(TRUTH, truth)


def test_summary_counts_failures_and_misses() -> None:
    errors = np.array([[0.02] * 5, [0.04] * 5, [0.2] * 5])  # the third face fails (> 0.1)
    summary = summarise_errors(errors, samples=4, misses=1)
    assert summary["faces_scored"] == 3
    assert summary["nme_mean"] == pytest.approx((0.02 + 0.04 + 0.2) / 3)
    assert summary["nme_median"] == pytest.approx(0.04)
    assert summary["failure_rate"] == pytest.approx(1 / 3)
    assert summary["failure_rate_counting_misses"] == pytest.approx(2 / 4)
    assert summary["per_point_mean"]["nose"] == pytest.approx((0.02 + 0.04 + 0.2) / 3)  # type: ignore[index]


def test_iou_and_best_overlap() -> None:
    a = Box(0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou(a, Box(10, 0, 10, 10)) == 0.0  # touching edges share no area
    assert iou(a, Box(0, 0, 0, 0)) == 0.0
    assert iou(a, Box(2, 2, 5, 5)) == pytest.approx(25 / 100)  # contained
    boxes = [Box(20, 20, 5, 5), Box(5, 0, 10, 10), Box(1, 1, 10, 10)]
    index, overlap = best_overlap(boxes, a)
    assert index == 2
    assert overlap == pytest.approx(81 / 119)
    assert best_overlap([Box(50, 50, 5, 5)], a) == (-1, 0.0)
    assert best_overlap([], a) == (-1, 0.0)
