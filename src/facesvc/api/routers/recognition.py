"""Verification (1:1), identification (1:N) and comparison of two photos."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Path, Query, UploadFile

from facesvc.api.deps import (
    BINARY_FILE,
    ImageBytes,
    RecognitionDep,
    StateDep,
    read_upload,
    require_verify,
)
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import CompareResponse, IdentifyResponse, VerifyResponse

Far = Annotated[
    float | None,
    Query(
        gt=0.0,
        le=0.5,
        description="Target false-accept rate (e.g. 0.0001); sets the threshold from the "
        "model's score calibration. Default: the calibrated threshold (1:1) or "
        "FACESVC_IDENTIFY_FAR at your gallery's size (1:N)",
        examples=[0.0001],
    ),
]


LivenessSession = Annotated[
    uuid.UUID | None,
    Query(
        description="A passed liveness session (POST /v1/liveness/sessions) of the person in "
        "the photo: spent by this call, whatever its outcome. Required for verify when the "
        "tenant requires liveness",
    ),
]


router = APIRouter(
    prefix="/v1",
    tags=["recognition"],
    dependencies=[Depends(require_verify)],
    responses=problem_responses(401, 403),
)


@router.post(
    "/users/{user_id}/verify",
    operation_id="verify_user",
    summary="1:1 login: is the largest face in the photo this user?",
    responses=problem_responses(400, 404, 409, 410, 413, 415, 422, 429, 503),
)
async def verify_user(
    user_id: Annotated[uuid.UUID, Path(description="The user to verify against")],
    image: ImageBytes,
    recognition: RecognitionDep,
    far: Far = None,
    liveness_session: LivenessSession = None,
) -> VerifyResponse:
    """Compares the photo's largest face with every face enrolled for the user and keeps the
    best: `match` is `similarity >= threshold`. An unknown user, a user without faces and a
    wrong face give the same answer (`match: false`). After 5 failures in a row for one user
    id: 429 `too-many-attempts` with `Retry-After`, growing with each further failure.
    With `liveness_session`: a session that is unknown (404), not passed or already used
    (409), expired (410), or whose face is not the photo's (422) refuses the login."""
    result = await recognition.verify(user_id, image, far, liveness_session)
    return VerifyResponse.of(result)


@router.post(
    "/identify",
    operation_id="identify_face",
    summary="1:N: who is the largest face in the photo, or nobody known",
    responses=problem_responses(400, 404, 409, 410, 413, 415, 422, 503),
)
async def identify_face(
    image: ImageBytes,
    recognition: RecognitionDep,
    top_k: Annotated[int, Query(ge=1, le=100, description="Candidates to return")] = 5,
    far: Far = None,
    liveness_session: LivenessSession = None,
    mode: Annotated[
        Literal["decide", "review"] | None,
        Query(
            description="`decide` (default: FACESVC_IDENTIFY_MODE): `match` is the automatic "
            "decision at the calibrated 1:N threshold. `review`: candidates ranked for a person "
            "to review, each with the false-match risk of accepting it, and no automatic "
            "decision (`match` null) — for large galleries, where the threshold that keeps "
            "unknown people out also rejects most genuine probes"
        ),
    ] = None,
) -> IdentifyResponse:
    """Searches every enrolled user: `match` is the best user's id when their similarity
    clears the threshold, else `null` (an unknown person); `candidates` are best first."""
    result = await recognition.identify(
        image, top_k, far, liveness_session, mode or recognition.default_identify_mode
    )
    return IdentifyResponse.of(result)


@router.post(
    "/compare",
    operation_id="compare_faces",
    summary="Are the largest faces of two photos the same person?",
    responses=problem_responses(400, 413, 415, 422, 503),
)
async def compare_faces(
    state: StateDep,
    recognition: RecognitionDep,
    image_a: Annotated[UploadFile, File(description="First photo", json_schema_extra=BINARY_FILE)],
    image_b: Annotated[UploadFile, File(description="Second photo", json_schema_extra=BINARY_FILE)],
    far: Far = None,
) -> CompareResponse:
    data_a = await read_upload(image_a, state)
    data_b = await read_upload(image_b, state)
    result = await recognition.compare(data_a, data_b, far)
    return CompareResponse.of(result)
