"""Shared fixtures: settings on a temp database, the real models, LFW/dlib data paths.

The app is built once per session (loading the real models takes seconds) and driven in
process through httpx's ASGI transport inside a lifespan manager.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
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
from facesvc.settings import ENV_FILE_VARIABLE, Settings
from tests.support.backends import chosen_backends
from tests.support.pg import (  # noqa: F401  (fixtures, for the PostgreSQL runs)
    pgvector_server,
    postgres_server,
)


def isolate_settings_from_the_developer() -> None:
    """Tests see only the settings they set themselves: no `.env` file is read (by this
    process or by the CLI and server subprocesses, which inherit the environment), and no
    FACESVC_* variable of the caller's shell leaks in, but the evaluation data's path and
    the suite's own choice of database backends."""
    for name in [n for n in os.environ if n.startswith("FACESVC_")]:
        if name not in ("FACESVC_DATA_DIR", "FACESVC_TEST_BACKENDS"):
            del os.environ[name]
    os.environ[ENV_FILE_VARIABLE] = ""


isolate_settings_from_the_developer()

DATA_DIR = Path(os.environ.get("FACESVC_DATA_DIR", Settings().data_dir))
LFW = DATA_DIR / "lfw" / "lfw-deepfunneled"
DLIB = DATA_DIR / "dlib_faces"
# The session app's first admin key (FACESVC_BOOTSTRAP_API_KEY) and data key: fresh per run.
ADMIN_KEY = generate_api_key()
DATA_KEY = generate_data_key("test1")


def lfw_image(name: str, number: int) -> bytes:
    return (LFW / name / f"{name}_{number:04d}.jpg").read_bytes()


def require_data() -> None:
    if not LFW.is_dir() or not DLIB.is_dir():
        message = f"evaluation data not found under {DATA_DIR} (set FACESVC_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    require_data()
    return DATA_DIR


# The tests/support/pg.py fixture that serves each PostgreSQL backend.
SERVER_FIXTURE = {"postgresql": "postgres_server", "pgvector": "pgvector_server"}


@pytest.fixture(scope="session", params=chosen_backends())
def database_backend(request: pytest.FixtureRequest) -> str:
    """Every in-process API test runs three times: on SQLite (the embedded default), on a real
    PostgreSQL server (tests/support/pg.py) with the in-process gallery, and on PostgreSQL with
    pgvector holding the gallery (FACESVC_GALLERY_BACKEND=pgvector), all built by the same
    migrations."""
    return str(request.param)


@pytest.fixture(scope="session")
def settings(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, database_backend: str
) -> Settings:
    if database_backend != "sqlite":
        server = request.getfixturevalue(SERVER_FIXTURE[database_backend])
        url = server.url_for(server.create_database())
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'facesvc.db'}"
    return Settings(
        database_url=url,
        gallery_backend="pgvector" if database_backend == "pgvector" else "exact",
        data_dir=DATA_DIR,
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
    )


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


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Sends the admin key of the default tenant (tests of keys and scopes override it)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://facesvc.test", headers={"X-API-Key": ADMIN_KEY}
    ) as c:
        yield c


@pytest.fixture(scope="session")
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no key."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facesvc.test") as c:
        yield c


def image_file(
    data: bytes, name: str = "face.jpg", mime: str = "image/jpeg"
) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, mime)}


async def set_sensitive_attributes(admin: httpx.AsyncClient, on: bool) -> dict[str, Any]:
    """Turn the tenant of ``admin``'s key's age, gender and expression on or off (PATCH
    /v1/tenant); the tenant's settings after the change."""
    response = await admin.patch("/v1/tenant", json={"sensitive_attributes": on})
    assert response.status_code == 200, response.text
    settings: dict[str, Any] = response.json()
    assert settings["sensitive_attributes"] is on
    return settings


@pytest.fixture
async def sensitive_attributes(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """The default tenant (the session ``client``'s) may ask for age, gender and expression
    during the test: they are off by default (issue 25)."""
    await set_sensitive_attributes(client, True)
    yield
    await set_sensitive_attributes(client, False)


MakeClient = Callable[[str], httpx.AsyncClient]


async def new_key(app: FastAPI, tenant: str, *scopes: str) -> str:
    """A key made the way `facesvc keys create` makes it (the tenant is created if new)."""
    state: AppState = app.state.facesvc
    async with session_scope(state.sessionmaker) as session:
        found = await tenant_named_or_new(session, tenant)
        _, secret = await ApiKeyService(session, Caller.operator(found.id)).create(
            f"test-{'-'.join(scopes)}", list(scopes)
        )
    return secret


@pytest.fixture
async def as_key(app: FastAPI) -> AsyncIterator[MakeClient]:
    """Clients of the session app that send a given key (closed after the test)."""
    clients: list[httpx.AsyncClient] = []

    def make(key: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://facesvc.test",
            headers={"X-API-Key": key},
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()
