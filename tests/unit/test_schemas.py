"""Responses round by their field types, whichever path builds them: a box to a hundredth of
a pixel (``Pixels``), detected now or stored with an enrolled face."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from facesvc.api.schemas import BoxOut, FaceOut, LegacyRegisterResponse
from facesvc.db import models as db
from facesvc.inference.types import Box

BOX = Box(x=10.123456, y=20.987654, width=100.555555, height=120.444444)
ROUNDED_BOX = {"x": 10.12, "y": 20.99, "width": 100.56, "height": 120.44}


def stored_face() -> db.Face:
    """An enrolled face as its row holds it: the detector's box, unrounded."""
    return db.Face(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        model_name="facenet",
        model_version="1",
        box_x=BOX.x,
        box_y=BOX.y,
        box_width=BOX.width,
        box_height=BOX.height,
        image_width=640,
        image_height=480,
        detection_score=0.99,
        created_at=datetime.now(UTC),
    )


def test_a_stored_box_answers_as_the_detected_one_did() -> None:
    face = stored_face()
    user = db.User(id=face.user_id, name="Ada Lovelace")
    assert BoxOut.of(BOX).model_dump() == ROUNDED_BOX
    assert BoxOut.of_stored(face).model_dump() == ROUNDED_BOX
    assert FaceOut.of(face).model_dump()["box"] == ROUNDED_BOX
    assert LegacyRegisterResponse.of(user, face).model_dump()["box"] == ROUNDED_BOX
    # read back from a job's stored result as well
    assert BoxOut.model_validate({"x": BOX.x, "y": 1, "width": 2, "height": 3}).x == 10.12
