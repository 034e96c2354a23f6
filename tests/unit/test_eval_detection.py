"""Detection metrics: imglab XML parsing and greedy IoU matching with ignored boxes."""

from __future__ import annotations

import pytest

from facesvc.evaluation.detection import MatchCounts, match_detections, parse_imglab
from facesvc.inference.types import Box

XML = """<?xml version='1.0' encoding='ISO-8859-1'?>
<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>
<dataset>
<name>Testing faces</name>
<images>
  <image file='group.jpg' width='500' height='332'>
    <box top='181' left='274' width='52' height='53'/>
    <box top='10' left='20' width='30' height='40' ignore='1'/>
    <box top='156' left='55' width='44' height='44'>
      <part name='01' x='60' y='170'/>
    </box>
  </image>
  <image file='empty.jpg'/>
</images>
</dataset>
"""


def test_parse_imglab() -> None:
    group, empty = parse_imglab(XML)
    assert group.file == "group.jpg"
    assert group.boxes == (Box(274, 181, 52, 53), Box(55, 156, 44, 44))
    assert group.ignore == (Box(20, 10, 30, 40),)
    assert empty.file == "empty.jpg"
    assert empty.boxes == ()
    assert empty.ignore == ()


def test_matching_counts_true_and_false_positives() -> None:
    truth = [Box(0, 0, 10, 10), Box(100, 0, 10, 10)]
    detections = [
        (Box(1, 1, 10, 10), 0.9),  # IoU 81/119 = 0.68 with the first: a hit
        (Box(0, 0, 10, 10), 0.8),  # the first again: a duplicate, so a false positive
        (Box(105, 0, 10, 10), 0.95),  # IoU 1/3 with the second: below 0.5, a false positive
        (Box(300, 300, 10, 10), 0.7),  # nowhere near a face
    ]
    counts = match_detections(detections, truth)
    assert (counts.labelled, counts.true_positives, counts.false_positives) == (2, 1, 3)
    assert counts.recall == 0.5
    assert counts.precision == 0.25
    assert sorted(counts.false_positive_ious) == pytest.approx([0.0, 1 / 3, 1.0])


def test_matching_is_most_confident_first() -> None:
    truth = [Box(0, 0, 10, 10)]
    weak_exact, strong_offset = (Box(0, 0, 10, 10), 0.6), (Box(2, 0, 10, 10), 0.99)
    counts = match_detections([weak_exact, strong_offset], truth)
    # the confident one claims the face even though the weak one fits better
    assert (counts.true_positives, counts.false_positives) == (1, 1)
    assert counts.false_positive_ious == [1.0]
    assert match_detections([strong_offset], truth, min_iou=0.7).true_positives == 0


def test_ignored_boxes_are_neither_right_nor_wrong() -> None:
    counts = match_detections([(Box(50, 50, 20, 20), 0.9)], truth=[], ignore=[Box(52, 50, 20, 20)])
    assert (counts.labelled, counts.true_positives, counts.false_positives) == (0, 0, 0)
    assert counts.ignored == 1
    assert counts.precision == 1.0  # nothing claimed, nothing wrong


def test_counts_add_up() -> None:
    total = MatchCounts()
    total += MatchCounts(labelled=3, true_positives=2, false_positives=1)
    total += MatchCounts(labelled=1, true_positives=1, ignored=2)
    assert (total.labelled, total.true_positives, total.false_positives, total.ignored) == (
        4,
        3,
        1,
        2,
    )
    assert total.recall == 0.75
    assert total.precision == 0.75
