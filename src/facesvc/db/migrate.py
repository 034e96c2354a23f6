"""Run the Alembic migrations from code (CLI, app start-up, tests).

``alembic/env.py`` drives the async engine with ``asyncio.run``, so the sync
functions here must be called where no event loop is running; from async code
use the ``*_async`` variants, which run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from facesvc.db.engine import create_migration_engine
from facesvc.settings import PROJECT_ROOT

ALEMBIC_DIR = PROJECT_ROOT / "alembic"

log = logging.getLogger(__name__)


class SchemaOutOfDateError(RuntimeError):
    """The database is older than this code's migrations (or has none)."""


def alembic_config(database_url: str) -> Config:
    """An Alembic config built in code: no ini file, the URL given here."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # Config values go through ConfigParser interpolation: a URL-encoded password
    # ("%40") would otherwise be read as an interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    return asyncio.run(_current(database_url))


def head() -> str | None:
    """The newest revision in ``alembic/versions``."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, database_url, revision)


async def downgrade_async(database_url: str, revision: str) -> None:
    await asyncio.to_thread(downgrade, database_url, revision)


async def current_async(database_url: str) -> str | None:
    return await _current(database_url)


async def _current(database_url: str) -> str | None:
    engine = create_migration_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_revision_of)
    finally:
        await engine.dispose()


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse to serve a database older than this code: its queries would fail on every
    request (a column a newer migration adds) instead of once, here, with the command to
    run. A database newer than this code (a rollback after a deploy that migrated) is served
    with a warning: the migrations add, so older code keeps working on a newer schema."""
    try:
        script = ScriptDirectory.from_config(alembic_config("sqlite://"))
        head = script.get_current_head()
    except CommandError as exc:  # an installation without the migrations folder
        log.warning("cannot read the migrations (%s): the schema's revision is not checked", exc)
        return
    async with engine.connect() as conn:
        current = await conn.run_sync(_revision_of)
    if current == head:
        return
    fix = "run `facesvc db upgrade` (or serve with `facesvc serve --migrate`) first"
    if current is None:
        raise SchemaOutOfDateError(f"the database has no schema (migrations up to {head}): {fix}")
    try:
        known = script.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        log.warning(
            "the database is at migration %s, which this code does not know (its newest is "
            "%s): a newer release migrated it; serving on it",
            current,
            head,
        )
        return
    raise SchemaOutOfDateError(
        f"the database is at migration {current}, this code needs {head}: {fix}"
    )
