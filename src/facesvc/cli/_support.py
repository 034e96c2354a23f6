"""What the console commands share: error exits, and a database session acting for a tenant.

Imports stay inside the functions, so `facesvc --help` does not load SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from facesvc.security.keys import Caller


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` in red on stderr; raise the returned Exit(code)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@asynccontextmanager
async def operator_session(
    tenant: str, *, create: bool = False
) -> AsyncIterator[tuple[AsyncSession, Caller]]:
    """A session on the configured database (committed when the block succeeds) and the
    operator acting in tenant ``tenant``; exit 2 when it does not exist (unless ``create``)."""
    from facesvc.db.engine import create_engine, create_sessionmaker, session_scope
    from facesvc.security.keys import Caller
    from facesvc.services.keys import tenant_named, tenant_named_or_new
    from facesvc.settings import Settings

    engine = create_engine(Settings().database_url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            found = await (
                tenant_named_or_new(session, tenant) if create else tenant_named(session, tenant)
            )
            if found is None:
                raise fail(f"no tenant named {tenant!r}", 2)
            yield session, Caller.operator(found.id)
    finally:
        await engine.dispose()
