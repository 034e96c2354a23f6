"""Keys for the routes outside the API routers: /docs, /redoc, /openapi.json, /metrics.

They are open by default (FACESVC_DOCS_PUBLIC, FACESVC_METRICS_PUBLIC); when closed, an
admin key is needed, checked here by an HTTP middleware because FastAPI serves the schema
and the docs without dependencies. /livez and /readyz are always open (probes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from facesvc.api.deps import request_key
from facesvc.api.problems import problem_response
from facesvc.errors import ForbiddenError, UnauthorizedError
from facesvc.settings import Settings

DOC_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
METRICS_PATHS = frozenset({"/metrics"})


def install_private_paths(app: FastAPI, settings: Settings) -> None:
    private = (frozenset() if settings.docs_public else DOC_PATHS) | (
        frozenset() if settings.metrics_public else METRICS_PATHS
    )
    if not private:
        return

    @app.middleware("http")
    async def _admin_only(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path not in private:
            return await call_next(request)
        key = await request_key(request)
        caller = None
        if key:
            state = request.app.state.facesvc
            caller = await state.callers.authenticate(state.sessionmaker, key)
        if caller is None:
            return problem_response(
                request,
                UnauthorizedError(
                    "this path needs an admin API key (FACESVC_DOCS_PUBLIC / METRICS_PUBLIC)"
                ),
            )
        if not caller.allows("admin"):
            return problem_response(request, ForbiddenError("this path needs the admin scope"))
        return await call_next(request)
