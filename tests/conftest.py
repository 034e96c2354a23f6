"""Shared fixtures: settings on a temp database, the session app and its clients, the LFW/dlib
data path. Their helpers live in tests/support/ (data.py, api.py).

The app is built once per session (loading the real models takes seconds) and driven in
process through httpx's ASGI transport inside a lifespan manager.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from facesvc.settings import ENV_FILE_VARIABLE, Settings
from tests.support.api import (
    ADMIN_KEY,
    DATA_KEY,
    MakeClient,
    running_app,
    set_sensitive_attributes,
)
from tests.support.backends import chosen_backends
from tests.support.data import DATA_DIR, require_data
from tests.support.pg import (  # noqa: F401  (the fixtures, for the PostgreSQL runs)
    SERVER_FIXTURE,
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


@pytest.fixture(scope="session")
def data_dir() -> Path:
    require_data()
    return DATA_DIR


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


@pytest.fixture
async def sensitive_attributes(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """The default tenant (the session ``client``'s) may ask for age, gender and expression
    during the test: they are off by default (issue 25)."""
    await set_sensitive_attributes(client, True)
    yield
    await set_sensitive_attributes(client, False)


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
