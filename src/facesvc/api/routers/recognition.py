"""Verification (1:1), identification (1:N) and comparison of two photos."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Query, UploadFile

from facesvc.api.deps import (
    BINARY_FILE,
    ImageBytes,
    RecognitionDep,
    StateDep,
    api_key_header,
    read_upload,
)
from facesvc.api.errors import problem_responses
from facesvc.api.schemas import BoxOut, Candidate, CompareResponse, IdentifyResponse, VerifyResponse

router = APIRouter(prefix="/v1", tags=["recognition"], dependencies=[Depends(api_key_header)])


@router.post(
    "/users/{user_id}/verify",
    operation_id="verify_user",
    summary="1:1 login: is the largest face in the photo this user?",
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
async def verify_user(
    user_id: Annotated[uuid.UUID, Path(description="The user to verify against")],
    image: ImageBytes,
    recognition: RecognitionDep,
) -> VerifyResponse:
    """Compares the photo's largest face with every face enrolled for the user and keeps the
    best: `match` is `similarity >= threshold`. 409 `no-enrolled-faces` when there is none."""
    result = await recognition.verify(user_id, image)
    return VerifyResponse(
        match=result.match,
        similarity=round(result.similarity, 6),
        distance=round(result.distance, 6),
        threshold=result.threshold,
        user_id=result.user_id,
        face_id=result.face_id,
        faces_compared=result.faces_compared,
        box=BoxOut.of(result.box),
    )


@router.post(
    "/identify",
    operation_id="identify_face",
    summary="1:N: who is the largest face in the photo, or nobody known",
    responses=problem_responses(400, 413, 415, 422, 503),
)
async def identify_face(
    image: ImageBytes,
    recognition: RecognitionDep,
    top_k: Annotated[int, Query(ge=1, le=100, description="Candidates to return")] = 5,
) -> IdentifyResponse:
    """Searches every enrolled user: `match` is the best user's id when their similarity
    clears the threshold, else `null` (an unknown person); `candidates` are best first."""
    result = await recognition.identify(image, top_k)
    return IdentifyResponse(
        match=result.match,
        threshold=result.threshold,
        candidates=[
            Candidate(user_id=c.user_id, name=c.name, similarity=round(c.similarity, 6))
            for c in result.candidates
        ],
        box=BoxOut.of(result.box),
    )


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
) -> CompareResponse:
    data_a = await read_upload(image_a, state)
    data_b = await read_upload(image_b, state)
    result = await recognition.compare(data_a, data_b)
    return CompareResponse(
        match=result.match,
        similarity=round(result.similarity, 6),
        distance=round(result.distance, 6),
        threshold=result.threshold,
        box_a=BoxOut.of(result.box_a),
        box_b=BoxOut.of(result.box_b),
    )
