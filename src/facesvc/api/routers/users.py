"""Users and their enrolled faces."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from facesvc.api.deps import EnrolmentDep, ImageBytes, ModelsReady, UserServiceDep, api_key_header
from facesvc.api.errors import problem_responses
from facesvc.api.schemas import (
    BoxOut,
    FaceList,
    FaceOut,
    ImageSize,
    ModelRef,
    UserCreate,
    UserOut,
    UserPage,
)
from facesvc.db.models import Face, User

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[Depends(api_key_header)])


def _user_out(user: User, face_count: int) -> UserOut:
    return UserOut(
        id=user.id,
        name=user.name,
        external_id=user.external_id,
        metadata=user.metadata_,
        face_count=face_count,
        created_at=user.created_at,
    )


def _face_out(face: Face) -> FaceOut:
    return FaceOut(
        face_id=face.id,
        user_id=face.user_id,
        box=BoxOut(x=face.box_x, y=face.box_y, width=face.box_width, height=face.box_height),
        image=ImageSize(width=face.image_width, height=face.image_height),
        detection_score=face.detection_score,
        model=ModelRef(name=face.model_name, version=face.model_version),
        created_at=face.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_user",
    summary="Create a user (enrol faces next)",
    responses=problem_responses(409, 422),
)
async def create_user(body: UserCreate, users: UserServiceDep) -> UserOut:
    user = await users.create(body.name, body.external_id, body.metadata)
    return _user_out(user, 0)


@router.get(
    "",
    operation_id="list_users",
    summary="List users, oldest first",
    responses=problem_responses(422),
)
async def list_users(
    users: UserServiceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> UserPage:
    rows, total = await users.list_page(limit, offset)
    return UserPage(
        items=[_user_out(user, count) for user, count in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{user_id}", operation_id="get_user", summary="One user", responses=problem_responses(404, 422)
)
async def get_user(user_id: uuid.UUID, users: UserServiceDep) -> UserOut:
    user = await users.get(user_id)
    return _user_out(user, await users.face_count(user_id))


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_user",
    summary="Delete a user and every face enrolled for them",
    responses=problem_responses(404, 422),
)
async def delete_user(user_id: uuid.UUID, users: UserServiceDep) -> Response:
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
async def enrol_face(user_id: uuid.UUID, image: ImageBytes, enrolment: EnrolmentDep) -> FaceOut:
    return _face_out(await enrolment.enrol(user_id, image))


@router.get(
    "/{user_id}/faces",
    operation_id="list_faces",
    summary="A user's enrolled faces",
    responses=problem_responses(404, 422),
)
async def list_faces(user_id: uuid.UUID, enrolment: EnrolmentDep) -> FaceList:
    return FaceList(items=[_face_out(f) for f in await enrolment.list_faces(user_id)])


@router.delete(
    "/{user_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="delete_face",
    summary="Delete one enrolled face",
    responses=problem_responses(404, 422),
)
async def delete_face(user_id: uuid.UUID, face_id: uuid.UUID, enrolment: EnrolmentDep) -> Response:
    await enrolment.delete_face(user_id, face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
