"""Responses are built by their schema's ``.of`` from a service result, and round by their
field types whichever path builds them: a box to a hundredth of a pixel (``Pixels``),
detected now or stored with an enrolled face; every similarity, distance and probability to
six digits (``Score``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from facesvc.api.schemas import (
    BoxOut,
    CompareResponse,
    FaceOut,
    IdentifyResponse,
    LegacyLoginResponse,
    LegacyRegisterResponse,
    MatchScore,
    VerifyResponse,
)
from facesvc.db import models as db
from facesvc.inference.types import Box
from facesvc.services.recognition.service import (
    Comparison,
    Identification,
    RankedCandidate,
    Verification,
    distance_from_similarity,
)

BOX = Box(x=10.123456, y=20.987654, width=100.555555, height=120.444444)
ROUNDED_BOX = {"x": 10.12, "y": 20.99, "width": 100.56, "height": 120.44}
SIMILARITY = 0.61234567891
PROBABILITY = 0.99876543219
# A rate is not a score: rounded to six digits, one of 1e-9 would read as 0.
RATE = 1.234567e-9
THRESHOLD = 0.514382961
USER = uuid.uuid4()


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
        detection_score=0.973149843,
        created_at=datetime.now(UTC),
    )


def test_a_stored_box_answers_as_the_detected_one_did() -> None:
    face = stored_face()
    user = db.User(id=face.user_id, name="Ada Lovelace")
    assert BoxOut.of(BOX).model_dump() == ROUNDED_BOX
    assert BoxOut.of_stored(face).model_dump() == ROUNDED_BOX
    assert FaceOut.of(face).model_dump()["box"] == ROUNDED_BOX
    assert FaceOut.of(face).detection_score == 0.9731  # as /v1/detect gives its score
    assert LegacyRegisterResponse.of(user, face).model_dump()["box"] == ROUNDED_BOX
    # read back from a job's stored result as well
    assert BoxOut.model_validate({"x": BOX.x, "y": 1, "width": 2, "height": 3}).x == 10.12


def candidate(name: str = "Ada Lovelace") -> RankedCandidate:
    return RankedCandidate(
        user_id=USER,
        name=name,
        similarity=SIMILARITY,
        face_id=uuid.uuid4(),
        probability=PROBABILITY,
        false_match_rate=RATE,
    )


def test_verify_response_rounds_scores_not_the_threshold_or_rate() -> None:
    result = Verification(
        user_id=USER,
        match=True,
        similarity=SIMILARITY,
        threshold=THRESHOLD,
        face_id=uuid.uuid4(),
        faces_compared=2,
        box=BOX,
        probability=PROBABILITY,
        false_match_rate=RATE,
    )
    body = VerifyResponse.of(result).model_dump(mode="json")
    assert body["similarity"] == 0.612346
    assert body["distance"] == round(distance_from_similarity(SIMILARITY), 6)
    assert body["probability"] == 0.998765
    assert (body["threshold"], body["false_match_rate"]) == (THRESHOLD, RATE)
    assert body["box"] == ROUNDED_BOX
    assert body["faces_compared"] == 2


def test_a_failed_verification_answers_no_score() -> None:
    result = Verification(USER, False, None, THRESHOLD, None, None, BOX)
    body = VerifyResponse.of(result).model_dump(mode="json")
    assert body["match"] is False
    assert body["similarity"] is body["distance"] is body["probability"] is None


def test_identify_and_compare_responses_round_their_scores() -> None:
    found = Identification(USER, THRESHOLD, [candidate()], BOX, gallery_faces=3)
    body = IdentifyResponse.of(found).model_dump(mode="json")
    (best,) = body["candidates"]
    assert (best["similarity"], best["probability"]) == (0.612346, 0.998765)
    assert best["false_match_rate"] == RATE
    assert (body["match"], body["threshold"], body["box"]) == (str(USER), THRESHOLD, ROUNDED_BOX)

    compared = Comparison(True, SIMILARITY, 0.4, BOX, BOX, PROBABILITY, RATE)
    body = CompareResponse.of(compared).model_dump(mode="json")
    assert (body["similarity"], body["probability"]) == (0.612346, 0.998765)
    assert body["distance"] == round(distance_from_similarity(SIMILARITY), 6)
    assert body["box_a"] == body["box_b"] == ROUNDED_BOX


@pytest.mark.parametrize("build", ["direct", "validated"])
def test_a_score_is_rounded_however_the_model_is_built(build: str) -> None:
    fields = {"match": True, "similarity": SIMILARITY, "distance": 0.87654321, "threshold": 0.4}
    score = MatchScore(**fields) if build == "direct" else MatchScore.model_validate(fields)
    assert (score.similarity, score.distance) == (0.612346, 0.876543)


def test_legacy_login_reveals_name_and_score_only_on_a_match() -> None:
    known = Identification(USER, THRESHOLD, [candidate()], BOX)
    body = LegacyLoginResponse.of_identification(known).model_dump(mode="json")
    assert body == {
        "match": True,
        "user_id": str(USER),
        "name": "Ada Lovelace",
        "similarity": 0.612346,
        "threshold": THRESHOLD,
    }
    unknown = Identification(None, THRESHOLD, [candidate()], BOX)
    body = LegacyLoginResponse.of_identification(unknown).model_dump(mode="json")
    assert (body["match"], body["user_id"], body["name"], body["similarity"]) == (
        False,
        None,
        None,
        None,
    )

    verified = Verification(USER, True, SIMILARITY, THRESHOLD, uuid.uuid4(), 1, BOX)
    body = LegacyLoginResponse.of_verification(verified, "Ada").model_dump(mode="json")
    assert (body["user_id"], body["name"], body["similarity"]) == (str(USER), "Ada", 0.612346)
    refused = Verification(USER, False, SIMILARITY, THRESHOLD, None, None, BOX)  # revealed score
    body = LegacyLoginResponse.of_verification(refused, "Ada").model_dump(mode="json")
    assert (body["user_id"], body["name"], body["similarity"]) == (None, None, 0.612346)
