"""Shared fixtures: settings on a temp database, the real models, LFW/dlib data paths.

The app is built once per session (loading the real models takes seconds) and driven in
process through httpx's ASGI transport inside a lifespan manager.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facesvc.app import create_app
from facesvc.db.migrate import upgrade_async
from facesvc.settings import Settings
from facesvc.state import AppState

DATA_DIR = Path(os.environ.get("FACESVC_DATA_DIR", Settings().data_dir))
LFW = DATA_DIR / "lfw" / "lfw-deepfunneled"
DLIB = DATA_DIR / "dlib_faces"


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


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    db = tmp_path_factory.mktemp("db") / "facesvc.db"
    return Settings(database_url=f"sqlite+aiosqlite:///{db}", data_dir=DATA_DIR)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    await upgrade_async(settings.database_url)
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30):
        state: AppState = application.state.facesvc
        await state.models_ready.wait()
        assert state.registry.ready, state.models_error
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facesvc.test") as c:
        yield c


def image_file(
    data: bytes, name: str = "face.jpg", mime: str = "image/jpeg"
) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, mime)}
