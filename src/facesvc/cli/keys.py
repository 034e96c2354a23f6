"""``facesvc keys ...``: API keys, data keys, and re-encryption of stored embeddings."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Annotated

import typer

from facesvc.cli._support import configured_cipher, database, fail, operator_session
from facesvc.settings import Settings

keys_app = typer.Typer(
    help="API keys (create, list, revoke), data keys and their rotation.", no_args_is_help=True
)

TenantOption = Annotated[
    str, typer.Option("--tenant", help="Tenant name (created by `keys create` if new)")
]
SCOPE_CHOICES = ("admin", "enrol", "verify")


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="A label for the key, e.g. kiosk-lobby")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="admin, enrol or verify (repeatable)")
    ],
    tenant: TenantOption = "default",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from facesvc.services.keys import ApiKeyService

    unknown = sorted(set(scope) - set(SCOPE_CHOICES))
    if unknown or not scope:
        raise fail(f"--scope must be among {', '.join(SCOPE_CHOICES)} (got {unknown})", 2)
    if not 1 <= len(name) <= 100:
        raise fail("--name must be 1 to 100 characters", 2)

    async def run() -> tuple[str, str, uuid.UUID]:
        async with operator_session(tenant, create=True) as (session, operator):
            row, secret = await ApiKeyService(session, operator).create(name, scope)
            return secret, row.scopes, row.id

    secret, scopes, key_id = asyncio.run(run())
    typer.echo(f"key id {key_id}, tenant {tenant!r}, scopes: {scopes}", err=True)
    typer.echo("store it now, it is not shown again:", err=True)
    typer.echo(secret)


@keys_app.command("list")
def list_keys(tenant: TenantOption = "default") -> None:
    """List a tenant's keys (never the secrets)."""
    from facesvc.services.keys import ApiKeyService

    async def run() -> None:
        async with operator_session(tenant) as (session, operator):
            for key in await ApiKeyService(session, operator).list():
                state = "revoked" if key.revoked_at else "active"
                typer.echo(f"{key.id}  {key.prefix}...  {state:7s}  {key.scopes:18s} {key.name}")

    asyncio.run(run())


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[uuid.UUID, typer.Argument(help="The key's id (keys list)")],
    tenant: TenantOption = "default",
) -> None:
    """Revoke an API key: it stops working at once."""
    from facesvc.errors import KeyNotFoundError
    from facesvc.services.keys import ApiKeyService

    async def run() -> None:
        async with operator_session(tenant) as (session, operator):
            try:
                await ApiKeyService(session, operator).revoke(key_id)
            except KeyNotFoundError as exc:
                raise fail(str(exc), 2) from exc

    asyncio.run(run())
    typer.echo(f"revoked {key_id}")


@keys_app.command("generate")
def generate() -> None:
    """Print a new random API key (for FACESVC_BOOTSTRAP_API_KEY)."""
    from facesvc.security.keys import generate_api_key

    typer.echo(generate_api_key())


@keys_app.command("gen-data-key")
def gen_data_key(
    key_id: Annotated[str | None, typer.Option("--id", help="Key id (default: random)")] = None,
) -> None:
    """Print a new data key entry id:base64url(32 bytes) for FACESVC_ENCRYPTION_KEY.

    To rotate: put the new entry first, keep the old one after it, restart, then run
    `facesvc keys rotate-data`; once it reports no row under the old key, drop it."""
    from facesvc.security.crypto import EncryptionKeyError, generate_data_key

    try:
        typer.echo(generate_data_key(key_id))
    except EncryptionKeyError as exc:
        raise fail(str(exc), 2) from exc


@keys_app.command("rotate-data")
def rotate_data(
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Faces per transaction")] = 500,
) -> None:
    """Re-encrypt every stored embedding under the first (active) key of
    FACESVC_ENCRYPTION_KEY; rows already under it are left alone. Safe to re-run."""
    from rich.progress import Progress

    from facesvc.services.data_keys import DataKeyRotation, rotate_data_keys

    settings = Settings()
    cipher = configured_cipher(settings)
    if cipher.active_key_id is None:
        raise fail("FACESVC_ENCRYPTION_KEY is not set: nothing to encrypt with", 2)

    async def run() -> DataKeyRotation:
        async with database(settings) as sessions:
            with Progress() as bar:
                task = bar.add_task("re-encrypting", total=None)
                return await rotate_data_keys(
                    sessions,
                    cipher,
                    batch=batch,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    done = asyncio.run(run())
    # sealed gallery snapshots: a file under a retired key must not stay readable
    from sqlalchemy.engine import make_url

    from facesvc.gallery.sealed import cache_folder, remove_sealed

    url = make_url(settings.database_url)
    sqlite_path = url.database if url.get_backend_name() == "sqlite" else None
    dropped = remove_sealed(
        cache_folder(settings.gallery_cache_dir, sqlite_path if sqlite_path else None)
    )
    if dropped:
        typer.echo(f"removed {dropped} sealed gallery snapshot(s); the next start rebuilds them")
    if done.photos:
        typer.echo(f"re-encrypted {done.photos} photos waiting in jobs")
    typer.echo(f"re-encrypted {done.faces} faces under key {done.key_id!r}")
    for key_id, n in sorted(done.faces_by_key.items(), key=lambda kv: str(kv[0])):
        typer.echo(f"  {key_id or '(clear)'}: {n} faces")


@keys_app.command("init-env")
def init_env(
    path: Annotated[Path, typer.Option("--file", help="The .env file to complete")] = Path(".env"),
) -> None:
    """Add a fresh FACESVC_ENCRYPTION_KEY and FACESVC_BOOTSTRAP_API_KEY to .env where missing
    (used by `make run`); prints the admin key it wrote. Never overwrites a value."""
    from facesvc.security.crypto import generate_data_key
    from facesvc.security.keys import generate_api_key

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#") and line.split("=", 1)[1].strip()
    }
    added: list[str] = []
    if "FACESVC_ENCRYPTION_KEY" not in present and not os.environ.get("FACESVC_ENCRYPTION_KEY"):
        added.append(f"FACESVC_ENCRYPTION_KEY={generate_data_key()}")
    admin_key = None
    if "FACESVC_BOOTSTRAP_API_KEY" not in present and not os.environ.get(
        "FACESVC_BOOTSTRAP_API_KEY"
    ):
        admin_key = generate_api_key()
        added.append(f"FACESVC_BOOTSTRAP_API_KEY={admin_key}")
    if not added:
        typer.echo(f"{path}: keys already set", err=True)
        return
    prefix = "" if not text or text.endswith("\n") else "\n"
    header = "# added by `facesvc keys init-env`: secrets, never commit them\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # secrets: owner only
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(prefix + header + "\n".join(added) + "\n")
    typer.echo(f"{path}: wrote {', '.join(a.split('=')[0] for a in added)}", err=True)
    if admin_key:
        typer.echo(f"admin API key (X-API-Key; also in {path}): {admin_key}", err=True)
