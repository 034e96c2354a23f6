"""The request body limit, enforced before anything parses the body.

Pure ASGI middleware: a declared ``Content-Length`` over the limit is refused before the
app runs; a chunked body (no length) is counted as it streams and the read that crosses
the limit raises, so multipart parsing stops there and nothing more is spooled.

The connection is kept: the server discards the rest of the body, and the client, which
usually sends it all before reading, gets the 413 instead of a reset connection. A reverse
proxy's own limits (nginx's ``client_max_body_size``, ``client_body_timeout``) bound how
long a client may keep sending.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facesvc.api.problems import problem_response
from facesvc.errors import RequestTooLargeError
from facesvc.settings import Settings

# Multipart boundaries, part headers and the small form fields around the images.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# POST /v1/compare carries two images.
IMAGES_PER_REQUEST = 2


def request_body_limit(settings: Settings) -> int:
    """FACESVC_MAX_REQUEST_BYTES, or room for two images of FACESVC_MAX_UPLOAD_BYTES."""
    if settings.max_request_bytes is not None:
        return settings.max_request_bytes
    return IMAGES_PER_REQUEST * settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


class RequestBodyTooLargeError(StarletteHTTPException):
    """Raised by ``receive`` when the body grows past the limit.

    An ``HTTPException`` so that FastAPI's body parsing re-raises it as it is (any other
    error becomes a 400 "error parsing the body").
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


def too_large_response(request: Request, limit: int) -> JSONResponse:
    detail = f"the request body is larger than {limit} bytes"
    return problem_response(request, RequestTooLargeError(detail, limit=limit))


class RequestBodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await too_large_response(Request(scope), limit)(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestBodyTooLargeError(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except RequestBodyTooLargeError:
            # Normally answered by the exception handler inside the app; this covers a read
            # outside it (another middleware reading the body).
            if started:
                raise
            await too_large_response(Request(scope), limit)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


def install_request_limits(app: FastAPI, settings: Settings) -> None:
    """Add the body limit; call before ``install_observability`` so 413s are logged too."""
    limit = request_body_limit(settings)

    async def _too_large(request: Request, exc: Exception) -> JSONResponse:
        return too_large_response(request, limit)

    app.add_exception_handler(RequestBodyTooLargeError, _too_large)
    app.add_middleware(RequestBodyLimitMiddleware, max_bytes=limit)
