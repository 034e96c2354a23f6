"""What the console commands share: error exits, a database session acting for a tenant, and
the service's container running in-process.

Imports stay inside the functions, so `facesvc --help` does not load SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from facesvc.container import AppState
    from facesvc.security.crypto import EmbeddingCipher
    from facesvc.security.keys import Caller
    from facesvc.settings import Settings


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` in red on stderr; raise the returned Exit(code)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def configured_cipher(settings: Settings) -> EmbeddingCipher:
    """The data cipher the settings describe; exit 2 when they are unsafe or malformed."""
    from facesvc.container import data_cipher
    from facesvc.errors import ConfigurationError

    try:
        return data_cipher(settings)
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from exc


@asynccontextmanager
async def running_state(settings: Settings) -> AsyncIterator[AppState]:
    """The service's container with its models loaded, closed on the way out.

    Settings the container refuses (no or a malformed data key, a model not in the manifest,
    unknown liveness challenges) exit 2 with one line; a missing model file exits 1."""
    from facesvc.container import build_state
    from facesvc.errors import ConfigurationError
    from facesvc.inference.registry import ModelFileError

    try:
        state = build_state(settings)
    except (ConfigurationError, KeyError, ValueError) as exc:
        raise fail(str(exc).strip("'\""), 2) from exc
    try:
        try:
            await state.registry.start()
        except ModelFileError as exc:
            raise fail(str(exc)) from exc
        yield state
    finally:
        await state.registry.aclose()
        await state.engine.dispose()


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the configured database; the engine is disposed of on the way out."""
    from facesvc.db.engine import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def operator_session(
    tenant: str, *, create: bool = False
) -> AsyncIterator[tuple[AsyncSession, Caller]]:
    """A session on the configured database (committed when the block succeeds) and the
    operator acting in tenant ``tenant``; exit 2 when it does not exist (unless ``create``)."""
    from facesvc.db.engine import session_scope
    from facesvc.security.keys import Caller
    from facesvc.services.tenants import tenant_named, tenant_named_or_new
    from facesvc.settings import Settings

    async with database(Settings()) as sessions, session_scope(sessions) as session:
        found = await (
            tenant_named_or_new(session, tenant) if create else tenant_named(session, tenant)
        )
        if found is None:
            raise fail(f"no tenant named {tenant!r}", 2)
        yield session, Caller.operator(found.id)
