"""``create_app(settings)`` and the lifespan: engine, model registry, pipeline.

Models load in the background once the server is up, so /livez answers at once and
/readyz says 503 until every model is loaded and warmed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from facesvc import __version__
from facesvc.api.auth import install_private_paths
from facesvc.api.docs import install_offline_docs
from facesvc.api.limits import install_request_limits
from facesvc.api.problems import install_problem_handlers
from facesvc.api.routers import (
    admin,
    analysis,
    demo,
    health,
    jobs,
    legacy,
    liveness,
    metrics,
    recognition,
    users,
)
from facesvc.container import build_state
from facesvc.observability.metrics import metrics_of
from facesvc.observability.middleware import install_observability
from facesvc.settings import Settings

log = logging.getLogger("facesvc")


DESCRIPTION = """
Face detection, 5-point and 468-point landmarks, 128-d FaceNet embeddings, enrolment of
users with several faces each, verification (1:1), identification (1:N with "unknown") and
comparison, on real TensorFlow models.

Images are sent as multipart field `image` (JPEG, PNG, WebP or BMP, checked by content).
Every error is `application/problem+json` with a stable `type`.

Authenticate with an API key in `X-API-Key` (or `Authorization: Bearer <key>`). Keys have
scopes: `verify` (verify, identify, compare), `enrol` (users and faces), `admin`
(everything, plus keys and the audit trail). Detection, landmarks and embeddings take any
valid key. Users, faces, searches and the audit trail belong to the key's tenant.
"""

TAGS = [
    {"name": "analysis", "description": "Detection, landmarks and embeddings of every face."},
    {"name": "users", "description": "People and their enrolled faces."},
    {"name": "recognition", "description": "Verify (1:1), identify (1:N), compare."},
    {
        "name": "liveness",
        "description": "Challenge-response sessions (turn, blink, open mouth) that a printed "
        "or on-screen photo cannot pass; a passed session logs in once.",
    },
    {"name": "admin", "description": "API keys and the audit trail (admin scope)."},
    {"name": "jobs", "description": "Detection and enrolment of many photos, in the background."},
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "legacy", "description": "The seed tutorial's routes, for migration. Deprecated."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)  # refuses unsafe settings (no encryption key)
        metrics_of(app).observe_models(state.registry)
        metrics_of(app).set_gallery_size_provider(state.gallery.size)
        await state.start()  # models load in the background; the job runner waits for them
        app.state.facesvc = state
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="facesvc",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_offline_docs
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_request_limits(app, settings)  # 413 before a too-large body is parsed
    # request ids, JSON access log and Prometheus metrics; /docs and /redoc without a CDN
    install_observability(app)
    install_offline_docs(app)
    install_private_paths(app, settings)  # /docs, /openapi.json, /metrics: open by default
    app.include_router(legacy.gone_router)  # GETs of the old paths: 410, no API key needed
    for module in (
        health,
        analysis,
        users,
        recognition,
        liveness,
        jobs,
        admin,
        legacy,
        metrics,
        demo,
    ):
        app.include_router(module.router)
    return app
