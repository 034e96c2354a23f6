"""Fixtures shared by the unit tests: a migrated SQLite database of their own, and the
service's models without a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import create_engine, create_sessionmaker
from facesvc.db.migrate import upgrade_async
from facesvc.inference.pipeline import FacePipeline, PipelineLimits
from facesvc.inference.registry import ModelRegistry
from facesvc.settings import Settings


@pytest.fixture
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh SQLite file (a test module may override this, e.g. to add PostgreSQL)."""
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'facesvc.db'}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The database built by the real migrations."""
    await upgrade_async(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def pipeline(data_dir: Path) -> AsyncIterator[FacePipeline]:
    """The service's detector, mesh and embedder, loaded once (no database: these tests need
    only the models)."""
    settings = Settings(data_dir=data_dir)
    registry = ModelRegistry(settings)
    await registry.start()
    try:
        yield FacePipeline(registry, PipelineLimits.from_settings(settings))
    finally:
        registry.close()
