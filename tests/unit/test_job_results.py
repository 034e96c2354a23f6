"""What a job stores per photo (services/job_results.py) and how the API renders it.

Each shape a ``job_items.result`` may hold is frozen here as the JSON of a row: version 0,
the API's own JSON that jobs stored before there were records, and version 1, the records.
Both versions of one outcome must render to the same API JSON, also frozen here. A change to
a response model or a record that changes how a stored row reads fails these tests: give the
old shape its own reader (or bump the record's version), never edit a stored fixture.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from facesvc.api.schemas.jobs import JobItemOut
from facesvc.db.models import Face, ItemState, JobItem
from facesvc.errors import NoFaceError
from facesvc.inference.types import AnalysedFace, Box, Detection
from facesvc.services.analysis import AnalysedImage
from facesvc.services.job_results import DetectedRecord, EnrolledRecord, FailedRecord

# --- stored rows: version 0 (before records), as jobs stored them until issue 26 -------------

V0_DETECTED = """
{"image": {"width": 250, "height": 250}, "faces": [
  {"box": {"x": 71.36, "y": 66.02, "width": 109.77, "height": 109.77}, "score": 0.9731,
   "landmarks": {"left_eye": [102.51, 108.32], "right_eye": [146.2, 106.93],
                 "nose": [124.93, 131.41], "mouth_left": [106.09, 152.38],
                 "mouth_right": [143.43, 151.05]},
   "attributes": null},
  {"box": {"x": 12.5, "y": 30.25, "width": 20.0, "height": 20.01}, "score": 0.5121,
   "landmarks": {"left_eye": [17.0, 38.0], "right_eye": [26.5, 37.99], "nose": [22.0, 42.0],
                 "mouth_left": [18.0, 46.0], "mouth_right": [26.0, 46.0]},
   "attributes": null}]}
"""
V0_ENROLLED = """
{"face_id": "0b9d1f3e-7a2c-4e6b-8d0f-1a3c5e7b9d2f",
 "user_id": "6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c",
 "box": {"x": 71.36, "y": 66.02, "width": 109.77, "height": 109.77},
 "image": {"width": 250, "height": 250}, "detection_score": 0.9731,
 "model": {"name": "facenet", "version": "20170512-110547-keras-frozen-1"}, "quality": 0.8127,
 "consented_at": "2025-03-14T09:26:53.589793Z", "created_at": "2025-03-14T09:26:53.612345Z"}
"""
V0_FAILED = """
{"type": "/problems/no-face", "title": "No face found", "status": 422,
 "detail": "no face was found in the image"}
"""

# --- stored rows: version 1, the records -------------------------------------------------------

V1_DETECTED = """
{"v": 1, "width": 250, "height": 250, "faces": [
  {"box": [71.36124, 66.01873, 109.77312, 109.77298], "score": 0.9731498432159424,
   "points": [[102.5101318359375, 108.31771087646484], [146.19967651367188, 106.9336166381836],
              [124.92704772949219, 131.41012573242188], [106.08763885498047, 152.37501525878906],
              [143.43148803710938, 151.0457763671875]]},
  {"box": [12.5, 30.25, 20.0049, 20.0051], "score": 0.5120999813079834,
   "points": [[17.0, 38.0], [26.5, 37.99489974975586], [22.0, 42.0], [18.0, 46.0],
              [26.0, 46.0]]}]}
"""
V1_ENROLLED = """
{"v": 1, "face_id": "0b9d1f3e-7a2c-4e6b-8d0f-1a3c5e7b9d2f",
 "user_id": "6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c",
 "box": [71.36124038696289, 66.01873016357422, 109.77312469482422, 109.77298736572266],
 "image_width": 250, "image_height": 250, "detection_score": 0.9731498432159424,
 "model_name": "facenet", "model_version": "20170512-110547-keras-frozen-1", "quality": 0.8127,
 "consented_at": "2025-03-14T09:26:53.589793Z", "created_at": "2025-03-14T09:26:53.612345Z"}
"""
V1_FAILED = """
{"v": 1, "slug": "no-face", "detail": "no face was found in the image"}
"""

# --- what GET /v1/jobs/{id} answers for each (an item's `detection`, `face` or `problem`) ----
# Version 0 stored the API's JSON, so it is the answer until a response model changes; then
# write the new answer out here, and keep V0_* as they are (rows hold them).
DETECTION_JSON = V0_DETECTED
FACE_JSON = V0_ENROLLED
PROBLEM_JSON = """
{"type": "/problems/no-face", "title": "No face found", "status": 422,
 "detail": "no face was found in the image", "instance": null, "errors": null,
 "request_id": null}
"""

STORED = [  # (job kind, the row's JSON, the item's field it fills, that field's answer)
    pytest.param("detect", V0_DETECTED, "detection", DETECTION_JSON, id="v0-detected"),
    pytest.param("enrol", V0_ENROLLED, "face", FACE_JSON, id="v0-enrolled"),
    pytest.param("detect", V0_FAILED, "problem", PROBLEM_JSON, id="v0-failed"),
    pytest.param("detect", V1_DETECTED, "detection", DETECTION_JSON, id="v1-detected"),
    pytest.param("enrol", V1_ENROLLED, "face", FACE_JSON, id="v1-enrolled"),
    pytest.param("enrol", V1_FAILED, "problem", PROBLEM_JSON, id="v1-failed"),
]


def rendered(kind: str, state: ItemState, stored: str | None) -> dict[str, Any]:
    """The item as the API answers it, from a row holding ``stored``."""
    result = None if stored is None else json.loads(stored)
    item = JobItem(position=3, state=state, result=result)
    out: dict[str, Any] = JobItemOut.of(kind, item).model_dump(mode="json")
    return out


@pytest.mark.parametrize(("kind", "stored", "field", "answer"), STORED)
def test_every_stored_shape_renders_to_the_same_api_json(
    kind: str, stored: str, field: str, answer: str
) -> None:
    state = ItemState.FAILED if field == "problem" else ItemState.SUCCEEDED
    outcome = {"detection": None, "face": None, "problem": None, field: json.loads(answer)}
    assert rendered(kind, state, stored) == {"index": 3, "state": state.value, **outcome}


def test_items_not_processed_have_no_outcome() -> None:
    for state in (ItemState.PENDING, ItemState.CANCELLED):
        assert rendered("detect", state, None) == {
            "index": 3,
            "state": state.value,
            "detection": None,
            "face": None,
            "problem": None,
        }


# --- what the job runner writes ------------------------------------------------------------


def analysed_image() -> AnalysedImage:
    """What the pipeline gives for the photo of V1_DETECTED (float32 points, as it does)."""
    points = [
        [102.51013, 108.31771],
        [146.19968, 106.93362],
        [124.92705, 131.41012],
        [106.08764, 152.37501],
        [143.43149, 151.04577],
    ]
    return AnalysedImage(
        250,
        250,
        [
            AnalysedFace(
                Detection(Box(71.36124, 66.01873, 109.77312, 109.77298), 0.9731498432159424),
                five_points=np.array(points, dtype=np.float32),
            ),
            AnalysedFace(
                Detection(Box(12.5, 30.25, 20.0049, 20.0051), 0.5120999813079834),
                five_points=np.array(
                    [[17.0, 38.0], [26.5, 37.9949], [22.0, 42.0], [18.0, 46.0], [26.0, 46.0]],
                    dtype=np.float32,
                ),
            ),
        ],
    )


def enrolled_face() -> Face:
    """The row enrolment stored for V1_ENROLLED (the embedding is not kept in a record)."""
    return Face(
        id=uuid.UUID("0b9d1f3e-7a2c-4e6b-8d0f-1a3c5e7b9d2f"),
        user_id=uuid.UUID("6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"),
        embedding=b"\x00" * 512,
        box_x=71.36124038696289,
        box_y=66.01873016357422,
        box_width=109.77312469482422,
        box_height=109.77298736572266,
        image_width=250,
        image_height=250,
        detection_score=0.9731498432159424,
        model_name="facenet",
        model_version="20170512-110547-keras-frozen-1",
        quality=0.8127,
        consented_at=datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC),
        created_at=datetime(2025, 3, 14, 9, 26, 53, 612345, tzinfo=UTC),
    )


def test_the_runner_stores_version_1_records() -> None:
    assert DetectedRecord.of(analysed_image()).stored() == json.loads(V1_DETECTED)
    assert EnrolledRecord.of(enrolled_face()).stored() == json.loads(V1_ENROLLED)
    error = NoFaceError("no face was found in the image")
    assert FailedRecord.of(error).stored() == json.loads(V1_FAILED)


def test_a_record_keeps_no_attributes() -> None:
    """Detect jobs estimate none (issue 25); a record that dropped them silently would hide
    a change that starts asking for them."""
    image = analysed_image()
    with_attributes = AnalysedImage(image.width, image.height, image.faces, attributes=[])
    with pytest.raises(ValueError, match="no attributes"):
        DetectedRecord.of(with_attributes)


# --- rows this code cannot read as they are --------------------------------------------------


def test_a_newer_record_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 2"):
        rendered("detect", ItemState.FAILED, '{"v": 2, "slug": "no-face", "detail": "x"}')


def test_a_slug_gone_from_the_catalogue_keeps_its_type_and_detail() -> None:
    stored = '{"v": 1, "slug": "retired-problem", "detail": "as it was"}'
    assert rendered("detect", ItemState.FAILED, stored)["problem"] == {
        "type": "/problems/retired-problem",
        "title": "retired-problem",
        "status": 422,
        "detail": "as it was",
        "instance": None,
        "errors": None,
        "request_id": None,
    }
