"""``facesvc users ...``: users in the database."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from facesvc.cli._support import operator_session

users_app = typer.Typer(help="Users in the database.", no_args_is_help=True)


@users_app.command("list")
def users_list(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    tenant: Annotated[str, typer.Option(help="Tenant name")] = "default",
) -> None:
    """List users with their face counts."""
    from facesvc.repositories.users import UserRepository

    async def run() -> None:
        async with operator_session(tenant) as (session, operator):
            users = UserRepository(session, operator.tenant_id)
            rows, total = await users.list_page(limit, offset)
        for user, faces in rows:
            typer.echo(f"{user.id}  {faces:4d} faces  {user.name}")
        typer.echo(f"{len(rows)} of {total} users")

    asyncio.run(run())
