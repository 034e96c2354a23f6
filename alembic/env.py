"""Alembic environment: async engine, batch mode (SQLite), facesvc's metadata.

The URL comes from ``sqlalchemy.url`` when the caller set it (facesvc.db.migrate
does), else from ``Settings().database_url`` (FACESVC_DATABASE_URL). alembic.ini
deliberately carries no URL.
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from facesvc.db.engine import create_migration_engine
from facesvc.db.models import Base, include_in_autogenerate

config = context.config

# Only the `alembic` command line brings an ini file; programmatic callers keep
# their own logging untouched.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from facesvc.settings import Settings

    return Settings().database_url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=True,
        # The migration engine emits its own BEGIN on SQLite too (see
        # create_migration_engine), so a failed upgrade rolls back as a whole.
        transactional_ddl=True,
        compare_type=True,
        include_object=include_in_autogenerate,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) instead of running it."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_migration_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    # A caller may lend an open (sync-facing) connection, e.g. from AsyncConnection.run_sync.
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
