"""Dependencies as ``Annotated`` aliases: state, session, services, uploads, API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, File, Request, UploadFile
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.api.errors import ProblemError
from facesvc.db.engine import session_scope
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.enrolment import EnrolmentService
from facesvc.services.recognition import RecognitionService
from facesvc.services.users import UserService
from facesvc.state import AppState

# OpenAPI 3.0's "format: binary" beside FastAPI's 3.1 contentMediaType: client generators
# (openapi-python-client) make a file parameter only of the former.
BINARY_FILE: dict[str, Any] = {"format": "binary"}
# The same for list[UploadFile]: the items are the files.
BINARY_FILES: dict[str, Any] = {
    "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
}

# Declared so Swagger UI and generated clients send it; keys are enforced by a later release.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.facesvc
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    # Commits when the route returns, before the response is sent ("function" scope), so a
    # 2xx always means the data is stored.
    async with session_scope(state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def models_ready(state: StateDep) -> AppState:
    if not state.registry.ready:
        if state.models_error:
            raise ProblemError("not-ready", 503, f"start-up failed: {state.models_error}")
        raise ProblemError(
            "models-loading", 503, "models are still loading", headers={"Retry-After": "5"}
        )
    return state


ReadyStateDep = Annotated[AppState, Depends(models_ready)]
ModelsReady = Depends(models_ready)


def get_analysis(state: ReadyStateDep) -> FaceAnalysisService:
    return state.analysis


AnalysisDep = Annotated[FaceAnalysisService, Depends(get_analysis)]


def get_user_service(session: SessionDep, state: StateDep) -> UserService:
    return UserService(session, state.gallery)


UserServiceDep = Annotated[UserService, Depends(get_user_service)]


def get_enrolment(session: SessionDep, state: StateDep) -> EnrolmentService:
    # Listing and deleting faces needs no model; the enrol route also depends on ModelsReady.
    return EnrolmentService(session, state.analysis, state.gallery)


EnrolmentDep = Annotated[EnrolmentService, Depends(get_enrolment)]


def get_recognition(
    session: SessionDep, analysis: AnalysisDep, state: ReadyStateDep
) -> RecognitionService:
    return RecognitionService(session, analysis, state.gallery, state.registry.threshold)


RecognitionDep = Annotated[RecognitionService, Depends(get_recognition)]


async def read_upload(upload: UploadFile, state: AppState) -> bytes:
    limit = state.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ProblemError("payload-too-large", 413, f"the upload is larger than {limit} bytes")
    return data


async def image_bytes(
    state: StateDep,
    image: Annotated[
        UploadFile, File(description="JPEG, PNG, WebP or BMP", json_schema_extra=BINARY_FILE)
    ],
) -> bytes:
    return await read_upload(image, state)


ImageBytes = Annotated[bytes, Depends(image_bytes)]
