"""RFC 9457 problem+json for every error, built from the catalogue in ``facesvc.errors``.

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

from facesvc.errors import (
    FacesvcError,
    HTTPError,
    InternalError,
    InvalidRequestError,
    MalformedBodyError,
    MethodNotAllowedError,
    PathNotFoundError,
    PayloadTooLargeError,
    catalogue,
)
from facesvc.observability.request_id import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# The framework's own HTTP errors that have a problem type of their own (by status). Its only
# 400 is a body it could not parse (FastAPI's JSON decoding, Starlette's multipart parser).
_HTTP_ERRORS = {
    cls.status: cls
    for cls in (MalformedBodyError, PathNotFoundError, MethodNotAllowedError, PayloadTooLargeError)
}


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


def problem_response(request: Request, error: FacesvcError) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{error.slug}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": request.url.path,
    }
    body.update({k: v for k, v in error.extensions.items() if v is not None})
    headers = error.headers
    request_id = current_request_id() if error.status >= 500 else None
    if request_id is not None:
        body["request_id"] = request_id
        # An unhandled error's 500 is sent outside the request-id middleware: add it here.
        headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    return JSONResponse(body, status_code=error.status, headers=headers, media_type=PROBLEM_JSON)


def problem_of(error: FacesvcError, instance: str | None = None) -> Problem:
    """The problem an error stands for (bulk results carry one per item)."""
    return Problem(
        type=f"/problems/{error.slug}",
        title=error.title,
        status=error.status,
        detail=error.detail,
        instance=instance,
        **{k: v for k, v in error.extensions.items() if k in Problem.model_fields},
    )


def problem_responses(
    *statuses: int, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json errors.

    Each status must be one that a catalogue class answers with; ``described`` gives a
    status a description of its own (which problems an operation answers it with).
    ``model`` puts Problem in the schema's components (FastAPI also lists it under
    application/json); the explicit entry gives application/problem+json, the type every
    error is sent as, the same schema, so generated clients parse errors as Problem.
    """
    known = {cls.status for cls in catalogue()}
    if unknown := sorted(set(statuses) - known):
        raise ValueError(f"no problem type has status {unknown}")
    schema = {"$ref": f"{REF_PREFIX}{Problem.__name__}"}
    return {
        status: {
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": schema}},
            "description": (described or {}).get(status, "Problem"),
        }
        for status in statuses
    }


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(FacesvcError)
    async def _problem(request: Request, exc: FacesvcError) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return problem_response(
            request, InvalidRequestError("the request is not valid", errors=errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, headers = str(exc.detail), dict(exc.headers or {})
        kind = _HTTP_ERRORS.get(exc.status_code)
        error = (
            kind(detail, headers=headers)
            if kind is not None
            else HTTPError(exc.status_code, detail, headers=headers)
        )
        return problem_response(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, InternalError("unexpected error"))
