"""RFC 9457 problem+json for every error, with a stable ``type`` per kind of problem.

``type`` is a relative URI, ``/problems/<slug>``; GET on it describes the problem, so the
types are both stable identifiers for clients and readable documentation.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.constants import REF_PREFIX
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facesvc.inference.batching import QueueFullError
from facesvc.inference.images import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageTypeError,
)
from facesvc.observability.request_id import REQUEST_ID_HEADER, current_request_id
from facesvc.services.errors import LockedOutError, ServiceError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# slug -> (title, what it means and what to do): served at /problems/<slug>
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "validation-error": (
        "Invalid request",
        "A parameter or field is missing or malformed; `errors` lists each one.",
    ),
    "no-face": (
        "No face found",
        "The detector found no face in the image. Send a sharper, "
        "better lit photo where the face is at least ~40 px wide.",
    ),
    "multiple-faces": (
        "More than one face of similar size",
        "Enrolment needs one clear face: the second face is nearly as large as the first.",
    ),
    "no-enrolled-faces": (
        "The user has no enrolled faces",
        "Enrol at least one face before verifying this user.",
    ),
    "user-not-found": ("User not found", "No user has this id in your tenant."),
    "unauthorized": (
        "Missing or invalid API key",
        "Send a valid key in the X-API-Key header (or Authorization: Bearer <key>). Keys are "
        "created by an admin with POST /v1/keys or `facesvc keys create`.",
    ),
    "forbidden": (
        "Scope missing",
        "The key is valid but lacks the scope this operation needs (admin, enrol or verify).",
    ),
    "too-many-attempts": (
        "Too many failed verifications",
        "This user id failed verification too many times in a row; retry after the "
        "Retry-After delay, which grows with each further failure. A success resets it.",
    ),
    "consent-required": (
        "Consent not recorded",
        "Faces are biometric data: enrol only with the person's consent, sent as consent=true.",
    ),
    "not-calibrated": (
        "No score calibration for this model",
        "A `far` target needs the embedder's score calibration (manifest calibration_file, "
        "written by `facesvc eval calibrate`); use the default threshold instead.",
    ),
    "key-not-found": ("API key not found", "Your tenant has no API key with this id."),
    "job-not-found": (
        "Job not found",
        "Your tenant has no job with this id (enrol jobs are visible only to keys with the "
        "enrol scope).",
    ),
    "job-finished": (
        "Job already finished",
        "Only a queued or running job can be cancelled; this one has succeeded or failed.",
    ),
    "face-too-small": (
        "Face too small to enrol",
        "The face is smaller than the enrolment minimum; use a closer or larger photo.",
    ),
    "face-too-blurry": (
        "Face too blurred to enrol",
        "The face is not sharp enough (variance of the Laplacian below the minimum).",
    ),
    "face-turned-away": (
        "Face turned too far to enrol",
        "Enrol a photo where the person looks at the camera (yaw and pitch limits).",
    ),
    "face-not-found": ("Face not found", "This user has no face with this id."),
    "duplicate-external-id": (
        "external_id already in use",
        "Another user has this external_id; external ids are unique.",
    ),
    "empty-image": ("Empty image", "The uploaded file has no bytes."),
    "unsupported-image-type": (
        "Unsupported image type",
        "Send JPEG, PNG, WebP or BMP; the type is read from the file's content, not its name.",
    ),
    "corrupt-image": ("Corrupt image", "The image could not be decoded: truncated or damaged."),
    "image-too-large": (
        "Image too large",
        "The image has more pixels than the service accepts (FACESVC_MAX_IMAGE_PIXELS).",
    ),
    "payload-too-large": (
        "Upload too large",
        "The upload is larger than FACESVC_MAX_UPLOAD_BYTES.",
    ),
    "request-too-large": (
        "Request too large",
        "The request body is larger than FACESVC_MAX_REQUEST_BYTES (by its Content-Length, "
        "or counted as a chunked body streamed in); nothing of it was processed.",
    ),
    "overloaded": (
        "Overloaded",
        "A model's queue is full; retry after the Retry-After delay. "
        "Scale out or raise FACESVC_QUEUE_MAX_ITEMS if this is steady load.",
    ),
    "models-loading": (
        "Models are loading",
        "The service is starting; retry after the "
        "Retry-After delay. /readyz says when it is ready.",
    ),
    "not-ready": ("Not ready", "A dependency (models or database) is not available."),
    "not-found": ("Not found", "No such route."),
    "method-not-allowed": ("Method not allowed", "The route exists but not for this method."),
    "uploads-only": (
        "Images are uploads, never server paths",
        "The seed tutorial read the image from a server path named in the query string "
        "(`GET /face_detect?url=...`), which let any caller read the server's files. facesvc "
        "takes the photo itself: `POST` it as the multipart field `image` (legacy routes also "
        "accept `file`), or use `POST /v1/detect`.",
    ),
    "liveness-session-not-found": (
        "Liveness session not found",
        "No liveness session has this id in your tenant (or it was purged a week after it "
        "expired). Start one with POST /v1/liveness/sessions.",
    ),
    "liveness-session-expired": (
        "Liveness session expired",
        "The session's time (FACESVC_LIVENESS_SESSION_TTL_S) ran out before it was used to "
        "log in. Start a new session.",
    ),
    "liveness-session-used": (
        "Liveness session already used",
        "A passed liveness session logs in once; this one already did. Start a new session.",
    ),
    "liveness-not-passed": (
        "Liveness session has not passed",
        "Only a passed session can log in: GET the session to see its status, and `reason` "
        "when it failed.",
    ),
    "liveness-session-ended": (
        "Liveness session has ended",
        "The session passed, failed or expired: it takes no more frames. `status` says which.",
    ),
    "liveness-session-busy": (
        "Liveness session changed by another request",
        "Two requests sent frames to one session at the same time; send a session's frames "
        "one request after the other, in capture order, and retry this one.",
    ),
    "liveness-face-mismatch": (
        "The photo's face is not the liveness session's face",
        "The face in the login photo is not the person who passed the liveness session. The "
        "session is used up; start a new one.",
    ),
    "liveness-required": (
        "A passed liveness session is required",
        "Your tenant requires liveness for verification: pass a session "
        "(POST /v1/liveness/sessions, then its frames) and send its id as `liveness_session`.",
    ),
    "too-many-frames": (
        "Too many frames in one request",
        "Send at most FACESVC_LIVENESS_MAX_FRAMES_PER_REQUEST frames per request; send the "
        "rest in further requests.",
    ),
    "attributes-unavailable": (
        "Attribute models not loaded",
        "This service does not load the age, gender or expression network asked for "
        "(FACESVC_ATTRIBUTES=false, or its model manifest has no such entry); pose is always "
        "available. Ask its operator, or leave those out of `attributes`.",
    ),
    "http-error": ("HTTP error", "See `detail`."),
    "internal-error": (
        "Internal error",
        "An unexpected error; it has been logged. "
        "Please report it with the request's X-Request-ID.",
    ),
}

_IMAGE_ERRORS: dict[type[ImageError], tuple[str, int]] = {
    EmptyImageError: ("empty-image", 400),
    UnsupportedImageTypeError: ("unsupported-image-type", 415),
    CorruptImageError: ("corrupt-image", 400),
    ImageTooLargeError: ("image-too-large", 413),
}

_HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str = Field(examples=["/problems/no-face"])
    title: str = Field(examples=["No face found"])
    status: int = Field(examples=[422])
    detail: str | None = Field(default=None, examples=["no face was found in the image"])
    instance: str | None = Field(default=None, examples=["/v1/users/4b1c.../faces"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Validation errors, one per field"
    )
    request_id: str | None = Field(
        default=None,
        description="On 5xx errors: the request's X-Request-ID, to quote when reporting it",
        examples=["0f6f1c1e8e2b4a7c9d3e5f7a9b1c3d5e"],
    )


class ProblemError(Exception):
    """Raise from the API layer to answer with a problem (extensions become extra members)."""

    def __init__(
        self,
        slug: str,
        status: int,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or slug)
        self.slug, self.status, self.detail = slug, status, detail
        self.headers = headers
        self.extensions = extensions


def problem_response(
    request: Request,
    slug: str,
    status: int,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    title = PROBLEM_TYPES.get(slug, PROBLEM_TYPES["http-error"])[0]
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update({k: v for k, v in extensions.items() if v is not None})
    request_id = current_request_id() if status >= 500 else None
    if request_id is not None:
        body["request_id"] = request_id
        # An unhandled error's 500 is sent outside the request-id middleware: add it here.
        headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def problem_of(error: ServiceError | ImageError, instance: str | None = None) -> Problem:
    """The problem a domain or image error stands for (bulk results carry one per item)."""
    if isinstance(error, ServiceError):
        slug, status, detail, extra = error.slug, error.status, error.detail, error.extensions
    else:
        slug, status = image_problem(error)
        detail, extra = str(error), {}
    title = PROBLEM_TYPES.get(slug, PROBLEM_TYPES["http-error"])[0]
    return Problem(
        type=f"/problems/{slug}",
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        **{k: v for k, v in extra.items() if k in Problem.model_fields},
    )


def image_problem(error: ImageError) -> tuple[str, int]:
    return next(
        (v for cls, v in _IMAGE_ERRORS.items() if isinstance(error, cls)), ("corrupt-image", 400)
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json errors.

    ``model`` puts Problem in the schema's components (FastAPI also lists it under
    application/json); the explicit entry gives application/problem+json, the type every
    error is sent as, the same schema, so generated clients parse errors as Problem.
    """
    schema = {"$ref": f"{REF_PREFIX}{Problem.__name__}"}
    return {
        status: {
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": schema}},
            "description": "Problem",
        }
        for status in statuses
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            request, exc.slug, exc.status, exc.detail, exc.headers, **exc.extensions
        )

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, LockedOutError) else None
        return problem_response(
            request, exc.slug, exc.status, exc.detail, headers, **exc.extensions
        )

    @app.exception_handler(ImageError)
    async def _image(request: Request, exc: ImageError) -> JSONResponse:
        slug, status = image_problem(exc)
        return problem_response(request, slug, status, str(exc))

    @app.exception_handler(QueueFullError)
    async def _overloaded(request: Request, exc: QueueFullError) -> JSONResponse:
        return problem_response(
            request, "overloaded", 503, str(exc), {"Retry-After": "1"}, model=exc.name
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return problem_response(
            request, "validation-error", 422, "the request is not valid", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
        return problem_response(
            request, slug, exc.status_code, str(exc.detail), dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, "internal-error", 500, "unexpected error")
