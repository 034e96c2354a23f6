"""Helpers of the in-process API tests: the session app's keys, an app on given settings, clients
with a key, users with faces, and the problem+json check."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facesvc.app import create_app
from facesvc.container import AppState
from facesvc.db.engine import session_scope
from facesvc.db.migrate import upgrade_async
from facesvc.security.crypto import generate_data_key
from facesvc.security.keys import Caller, generate_api_key
from facesvc.services.keys import ApiKeyService
from facesvc.services.tenants import tenant_named_or_new
from facesvc.settings import Settings
from tests.support.data import image_file, lfw_image

# The session app's first admin key (FACESVC_BOOTSTRAP_API_KEY) and data key: fresh per run.
ADMIN_KEY = generate_api_key()
DATA_KEY = generate_data_key("test1")

PROBLEM = "application/problem+json"

MakeClient = Callable[[str], httpx.AsyncClient]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    return body


@asynccontextmanager
async def running_app(settings: Settings, startup_timeout: float = 30) -> AsyncIterator[FastAPI]:
    """An app on ``settings`` (its database migrated first), models loaded, inside its lifespan."""
    await upgrade_async(settings.database_url)
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=startup_timeout, shutdown_timeout=30):
        state: AppState = application.state.facesvc
        await state.models_ready.wait()
        assert state.registry.ready, state.models_error
        yield application


@asynccontextmanager
async def client_of_new_app(settings: Settings, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client (the session's admin key, http://``host``) of a new app on ``settings``, inside
    its lifespan once its models have loaded or failed to: no migration first, and readiness
    not required (tests of a restart, a broken model, a missing device)."""
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30):
        state: AppState = application.state.facesvc
        await state.models_ready.wait()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url=f"http://{host}",
            headers={"X-API-Key": ADMIN_KEY},
        ) as client:
            yield client


async def new_key(app: FastAPI, tenant: str, *scopes: str) -> str:
    """A key made the way `facesvc keys create` makes it (the tenant is created if new)."""
    state: AppState = app.state.facesvc
    async with session_scope(state.sessionmaker) as session:
        found = await tenant_named_or_new(session, tenant)
        _, secret = await ApiKeyService(session, Caller.operator(found.id)).create(
            f"test-{'-'.join(scopes)}", list(scopes)
        )
    return secret


async def set_sensitive_attributes(admin: httpx.AsyncClient, on: bool) -> dict[str, Any]:
    """Turn the tenant of ``admin``'s key's age, gender and expression on or off (PATCH
    /v1/tenant); the tenant's settings after the change."""
    response = await admin.patch("/v1/tenant", json={"sensitive_attributes": on})
    assert response.status_code == 200, response.text
    settings: dict[str, Any] = response.json()
    assert settings["sensitive_attributes"] is on
    return settings


async def create_user(client: httpx.AsyncClient, name: str, **extra: object) -> str:
    response = await client.post("/v1/users", json={"name": name, **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == name
    assert body["face_count"] == 0
    return str(body["id"])


async def enrol(
    client: httpx.AsyncClient, user_id: str, name: str, number: int
) -> dict[str, object]:
    """Enrol LFW's photo ``number`` of ``name`` (with consent) to the user."""
    response = await client.post(
        f"/v1/users/{user_id}/faces",
        files=image_file(lfw_image(name, number)),
        data={"consent": "true"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    assert body["user_id"] == user_id
    assert set(body["box"]) == {"x", "y", "width", "height"}  # type: ignore[arg-type]
    return body


async def enrolled_user(
    client: httpx.AsyncClient, photo: str, number: int = 1, name: str | None = None
) -> str:
    """A new user (named ``name``, else after the LFW person) with LFW's photo ``number`` of
    ``photo`` enrolled; the user's id."""
    user_id = await create_user(client, name if name is not None else photo.replace("_", " "))
    await enrol(client, user_id, photo, number)
    return user_id
