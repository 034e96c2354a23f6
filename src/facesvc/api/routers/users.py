"""Users and their enrolled faces."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, File, Path, Query, Response, UploadFile, status

from facesvc.api.deps import (
    BINARY_FILES,
    Consent,
    EnrolmentDep,
    ImageBytes,
    ModelsReady,
    StateDep,
    UserServiceDep,
    read_uploads,
    require_enrol,
)
from facesvc.api.problems import problem_of, problem_responses
from facesvc.api.schemas import (
    BulkEnrolItem,
    BulkEnrolResponse,
    FaceList,
    FaceOut,
    UserCreate,
    UserOut,
    UserPage,
)
from facesvc.db.models import Face

router = APIRouter(
    prefix="/v1/users",
    tags=["users"],
    dependencies=[Depends(require_enrol)],
    responses=problem_responses(401, 403),
)

UserId = Annotated[uuid.UUID, Path(description="The user's id (from create_user)")]
MAX_BULK_IMAGES = 32
FaceId = Annotated[uuid.UUID, Path(description="The face's id (from enrol_face)")]
NEW_USER_EXAMPLES = {
    "name": {"summary": "A name only", "value": {"name": "Ada Lovelace"}},
    "full": {
        "summary": "With your own id and metadata",
        "value": {
            "name": "Ada Lovelace",
            "external_id": "emp-0042",
            "metadata": {"department": "R&D"},
        },
    },
}
NewUser = Annotated[UserCreate, Body(openapi_examples=NEW_USER_EXAMPLES)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_user",
    summary="Create a user (enrol faces next)",
    responses=problem_responses(400, 409, 422),
)
async def create_user(body: NewUser, users: UserServiceDep) -> UserOut:
    user = await users.create(body.name, body.external_id, body.metadata)
    return UserOut.of(user, 0)


@router.get(
    "",
    operation_id="list_users",
    summary="List users, oldest first",
    responses=problem_responses(422),
)
async def list_users(
    users: UserServiceDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Users per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Users to skip")] = 0,
) -> UserPage:
    rows, total = await users.list_page(limit, offset)
    return UserPage(
        items=[UserOut.of(user, count) for user, count in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{user_id}", operation_id="get_user", summary="One user", responses=problem_responses(404, 422)
)
async def get_user(user_id: UserId, users: UserServiceDep) -> UserOut:
    user = await users.get(user_id)
    return UserOut.of(user, await users.face_count(user_id))


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_user",
    summary="Delete a user and every face enrolled for them",
    responses=problem_responses(404, 422),
)
async def delete_user(user_id: UserId, users: UserServiceDep) -> Response:
    await users.delete(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{user_id}/faces",
    status_code=status.HTTP_201_CREATED,
    operation_id="enrol_face",
    summary="Enrol one photo with exactly one clear face",
    responses=problem_responses(400, 404, 413, 415, 422, 503),
    dependencies=[ModelsReady],
)
async def enrol_face(
    user_id: UserId, image: ImageBytes, consent: Consent, enrolment: EnrolmentDep
) -> FaceOut:
    """The photo's largest face is embedded and added to the user's gallery entry at once
    (identify and verify see it in the next request). Refused with 422 `no-face`, or
    `multiple-faces` when a second face is nearly as large as the first, or
    `consent-required` unless `consent` is true."""
    return FaceOut.of(await enrolment.enrol(user_id, image, consent=consent))


@router.get(
    "/{user_id}/faces",
    operation_id="list_faces",
    summary="A user's enrolled faces",
    responses=problem_responses(404, 422),
)
async def list_faces(user_id: UserId, enrolment: EnrolmentDep) -> FaceList:
    return FaceList(items=[FaceOut.of(f) for f in await enrolment.list_faces(user_id)])


@router.delete(
    "/{user_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_face",
    summary="Delete one enrolled face",
    responses=problem_responses(404, 422),
)
async def delete_face(user_id: UserId, face_id: FaceId, enrolment: EnrolmentDep) -> Response:
    await enrolment.delete_face(user_id, face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{user_id}/faces/bulk",
    operation_id="enrol_faces_bulk",
    summary="Enrol several photos of one user in one request",
    description="Every photo is analysed concurrently (the models batch them) and stored in "
    "one transaction; each photo succeeds or fails on its own, reported per item.",
    responses=problem_responses(400, 404, 413, 422, 503),
    dependencies=[ModelsReady],
)
async def enrol_faces_bulk(
    user_id: UserId,
    state: StateDep,
    enrolment: EnrolmentDep,
    images: Annotated[
        list[UploadFile],
        File(description="1 to 32 photos (field `images`)", json_schema_extra=BINARY_FILES),
    ],
    consent: Consent,
) -> BulkEnrolResponse:
    data = await read_uploads(images, state, MAX_BULK_IMAGES)
    outcomes = await enrolment.enrol_many(user_id, data, consent=consent)
    items = [
        BulkEnrolItem(index=i, face=FaceOut.of(o))
        if isinstance(o, Face)
        else BulkEnrolItem(index=i, problem=problem_of(o))
        for i, o in enumerate(outcomes)
    ]
    enrolled = sum(item.face is not None for item in items)
    return BulkEnrolResponse(enrolled=enrolled, failed=len(items) - enrolled, items=items)
