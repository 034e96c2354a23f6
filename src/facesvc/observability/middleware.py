"""Per-request id, access log line and HTTP metrics, as pure ASGI middleware.

Pure ASGI (not ``BaseHTTPMiddleware``): the response streams through untouched, only its
start message gains the ``X-Request-ID`` header, and there is no extra task per request.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facesvc.observability.metrics import ServiceMetrics, install_metrics
from facesvc.observability.request_id import (
    REQUEST_ID_HEADER,
    accept_or_generate,
    bind_request_id,
    unbind_request_id,
)

access_log = logging.getLogger("facesvc.access")

_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
# Probes and scrapes come every few seconds: logged at debug so they do not drown requests.
_QUIET_ROUTES = frozenset({"/livez", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "<unmatched>"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away mid-request


class RequestObservationMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_or_generate(_header(scope, _HEADER))
        token = bind_request_id(request_id)
        status = 0
        root_path = str(scope.get("root_path", ""))
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                headers.append((_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            self._finish(scope, root_path, status or CLIENT_CLOSED_REQUEST, start, request_id)
            unbind_request_id(token)
            raise
        except Exception:
            # The 500 is answered by Starlette's outermost ServerErrorMiddleware, after this
            # returns: the id stays bound so the error handler puts it in the problem body.
            self._finish(scope, root_path, status or 500, start, request_id)
            raise
        self._finish(scope, root_path, status, start, request_id)
        unbind_request_id(token)

    def _finish(
        self, scope: Scope, root_path: str, status: int, start: float, request_id: str
    ) -> None:
        seconds = time.perf_counter() - start
        method: str = scope["method"]
        route = route_template(scope, root_path)
        if self.metrics is not None:
            self.metrics.observe_request(method, route, status, seconds)
        client = scope.get("client")
        access_log.log(
            logging.DEBUG if route in _QUIET_ROUTES and status < 400 else logging.INFO,
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000.0, 2),
                "request_id": request_id,
                "client_ip": client[0] if client else None,
            },
        )


def route_template(scope: Scope, root_path: str = "") -> str:
    """The matched route's path template (``/v1/users/{user_id}``), never the raw path, so
    metric labels stay few and logs hold no ids from URLs.

    ``root_path`` is the scope's root path when the request arrived: a mounted app (the
    docs' static files) shows as the growth of it, ``/static/docs/{path}``.
    """
    template = getattr(scope.get("route"), "path_format", None)
    if isinstance(template, str) and template:
        return template
    mounted = str(scope.get("root_path", ""))
    if len(mounted) > len(root_path) and mounted.startswith(root_path):
        return mounted[len(root_path) :] + "/{path}"
    return UNMATCHED_ROUTE


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def install_observability(app: FastAPI) -> ServiceMetrics:
    """Request ids, access logs and metrics for ``app``; /metrics is a router of its own."""
    metrics = install_metrics(app)
    app.add_middleware(RequestObservationMiddleware, metrics=metrics)
    return metrics
