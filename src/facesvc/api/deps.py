"""Dependencies as ``Annotated`` aliases: state, session, caller (API key), services, uploads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.container import AppState
from facesvc.db.engine import session_scope
from facesvc.errors import (
    ForbiddenError,
    InvalidRequestError,
    ModelsLoadingError,
    NotReadyError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from facesvc.security.keys import Caller
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.audit import AuditTrail
from facesvc.services.enrolment import EnrolmentService
from facesvc.services.keys import ApiKeyService
from facesvc.services.liveness.service import LivenessService
from facesvc.services.recognition.service import RecognitionService
from facesvc.services.tenants import TenantService
from facesvc.services.users import UserService

# OpenAPI 3.0's "format: binary" beside FastAPI's 3.1 contentMediaType: client generators
# (openapi-python-client) make a file parameter only of the former.
BINARY_FILE: dict[str, Any] = {"format": "binary"}
# The same for list[UploadFile]: the items are the files.
BINARY_FILES: dict[str, Any] = {
    "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
}

# Two ways to send a key, both declared so Swagger UI and generated clients offer them.
api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (from POST /v1/keys or `facesvc keys create`)",
)
bearer_token = HTTPBearer(
    auto_error=False, scheme_name="Bearer", description="The same API key as a bearer token"
)


# Dependencies are ``async def`` even when they only return a value: FastAPI runs a plain
# ``def`` dependency in its thread pool, a thread hand-off per dependency per request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.facesvc
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    # Commits when the route returns, before the response is sent ("function" scope), so a
    # 2xx always means the data is stored.
    async with session_scope(state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def refuse_if_start_up_failed(state: AppState) -> None:
    if state.models_error:
        raise NotReadyError(f"start-up failed: {state.models_error}")


async def models_ready(state: StateDep) -> AppState:
    # a step after the models can fail too (the gallery backend's check): no model routes then
    refuse_if_start_up_failed(state)
    if not state.registry.ready:
        raise ModelsLoadingError("models are still loading")
    return state


def presented_key(
    header_key: str | None, bearer: HTTPAuthorizationCredentials | None
) -> str | None:
    """The API key of a request: `X-API-Key`, else `Authorization: Bearer`."""
    return header_key or (bearer.credentials if bearer else None)


async def request_key(request: Request) -> str | None:
    """``presented_key`` read by the same security schemes outside a route (middleware)."""
    return presented_key(await api_key_header(request), await bearer_token(request))


async def current_caller(
    state: StateDep,
    header_key: Annotated[str | None, Depends(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_token)],
) -> Caller:
    """The caller a valid key stands for; 401 when the key is missing, unknown or revoked.

    Looked up in a short session of its own, or not at all when this worker saw the key
    recently (``CallerCache``: revocations still reach every worker at once): the request's
    session then takes a database connection only when it first needs one (after the
    models, for most routes), so requests waiting on inference do not hold connections."""
    presented = presented_key(header_key, bearer)
    caller = None
    if presented:
        caller = await state.callers.authenticate(state.sessionmaker, presented)
    if caller is None:
        raise UnauthorizedError(
            "an API key is required" if not presented else "the API key is not valid"
        )
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


class RequireScope:
    """A dependency that lets a caller through only with ``scope`` (admin has every scope).

    One instance per scope (below), so FastAPI resolves each once per request."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, caller: CallerDep) -> Caller:
        if not caller.allows(self.scope):
            raise ForbiddenError(f"this API key lacks the {self.scope!r} scope")
        return caller


require_admin = RequireScope("admin")
require_enrol = RequireScope("enrol")
require_verify = RequireScope("verify")
AdminCaller = Annotated[Caller, Depends(require_admin)]
EnrolCaller = Annotated[Caller, Depends(require_enrol)]
VerifyCaller = Annotated[Caller, Depends(require_verify)]

ReadyStateDep = Annotated[AppState, Depends(models_ready)]
ModelsReady = Depends(models_ready)


async def get_analysis(state: ReadyStateDep) -> FaceAnalysisService:
    return state.analysis


AnalysisDep = Annotated[FaceAnalysisService, Depends(get_analysis)]


async def get_user_service(
    session: SessionDep, state: StateDep, caller: EnrolCaller
) -> UserService:
    return UserService(session, state.gallery, caller)


UserServiceDep = Annotated[UserService, Depends(get_user_service)]


async def get_enrolment(
    session: SessionDep, state: StateDep, caller: EnrolCaller
) -> EnrolmentService:
    # Listing and deleting faces needs no model; the enrol route also depends on ModelsReady.
    return EnrolmentService(
        session,
        state.analysis,
        state.gallery,
        caller,
        state.policies.enrolment,
        writer=state.writer,
    )


EnrolmentDep = Annotated[EnrolmentService, Depends(get_enrolment)]


async def get_liveness(
    session: SessionDep, state: ReadyStateDep, caller: VerifyCaller
) -> LivenessService:
    return LivenessService(
        session,
        state.sessionmaker,
        state.pipeline,
        state.cipher,
        state.policies.liveness,
        caller,
        min_similarity=state.recognition_policy.decisions.threshold,
    )


LivenessDep = Annotated[LivenessService, Depends(get_liveness)]


async def get_recognition(
    session: SessionDep,
    analysis: AnalysisDep,
    state: ReadyStateDep,
    caller: VerifyCaller,
    liveness: LivenessDep,
) -> RecognitionService:
    return RecognitionService(
        session,
        state.sessionmaker,
        analysis,
        state.gallery,
        caller,
        state.recognition_policy,
        state.writer,
        liveness=liveness,
    )


RecognitionDep = Annotated[RecognitionService, Depends(get_recognition)]


async def get_key_service(session: SessionDep, caller: AdminCaller) -> ApiKeyService:
    return ApiKeyService(session, caller)


KeyServiceDep = Annotated[ApiKeyService, Depends(get_key_service)]


async def get_audit(session: SessionDep, caller: AdminCaller) -> AuditTrail:
    return AuditTrail(session, caller)


AuditDep = Annotated[AuditTrail, Depends(get_audit)]


async def get_tenant_service(session: SessionDep, caller: AdminCaller) -> TenantService:
    return TenantService(session, caller)


TenantServiceDep = Annotated[TenantService, Depends(get_tenant_service)]


async def read_upload(upload: UploadFile, state: AppState) -> bytes:
    limit = state.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"the upload is larger than {limit} bytes")
    return data


async def read_uploads(uploads: list[UploadFile], state: AppState, most: int) -> list[bytes]:
    """1 to ``most`` uploads, each within FACESVC_MAX_UPLOAD_BYTES."""
    if not 1 <= len(uploads) <= most:
        raise InvalidRequestError(f"send 1 to {most} images, not {len(uploads)}")
    return [await read_upload(upload, state) for upload in uploads]


async def image_bytes(
    state: StateDep,
    image: Annotated[
        UploadFile, File(description="JPEG, PNG, WebP or BMP", json_schema_extra=BINARY_FILE)
    ],
) -> bytes:
    return await read_upload(image, state)


ImageBytes = Annotated[bytes, Depends(image_bytes)]
Consent = Annotated[
    bool,
    Form(
        description="The person consented to storing this face (biometric data, GDPR art. 9);"
        " must be true",
        examples=[True],
    ),
]


async def legacy_image_bytes(
    state: StateDep,
    # typed as UploadFile (not "| None"): the schema stays a plain binary field that client
    # generators make a file of; FastAPI passes None when the field is absent
    image: Annotated[
        UploadFile,
        File(description="The photo (JPEG, PNG, WebP or BMP)", json_schema_extra=BINARY_FILE),
    ] = None,  # type: ignore[assignment]
    file: Annotated[
        UploadFile,
        File(
            description="The same photo under the seed tutorial's field name "
            "(`request.files.get('file')`): send one of the two",
            json_schema_extra=BINARY_FILE,
        ),
    ] = None,  # type: ignore[assignment]
) -> bytes:
    """The seed tutorial's clients send the photo as ``file``; facesvc's own as ``image``."""
    if image is not None and file is not None:
        raise InvalidRequestError("send the photo once: as `image` or as `file`, not both")
    upload = image if image is not None else file
    if upload is None:
        raise InvalidRequestError("no photo: send it as the multipart field `image` (or `file`)")
    return await read_upload(upload, state)


LegacyImageBytes = Annotated[bytes, Depends(legacy_image_bytes)]
