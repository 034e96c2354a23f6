"""``facesvc db ...``: the database schema, through Alembic migrations only."""

from __future__ import annotations

from typing import Annotated

import typer

from facesvc.cli._support import fail
from facesvc.settings import Settings

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from facesvc.db.migrate import current, upgrade

    settings = Settings()
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:
        raise fail(f"migration failed: {exc}") from exc
    typer.echo(f"database at revision {current(settings.database_url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (e.g. 0006)")],
) -> None:
    """Undo migrations down to REVISION (e.g. `0006`, then `upgrade` to re-run 0007 once
    pgvector is installed)."""
    from facesvc.db.migrate import current, downgrade

    settings = Settings()
    try:
        downgrade(settings.database_url, revision)
    except Exception as exc:
        raise fail(f"downgrade failed: {exc}") from exc
    typer.echo(f"database at revision {current(settings.database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from facesvc.db.migrate import current

    typer.echo(current(Settings().database_url) or "empty (no migrations applied)")
