"""``facesvc enrol`` (a NAME/photo.jpg folder tree) and ``facesvc reembed`` (after a model
change): both run the service's container in-process, with a progress bar."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from facesvc.cli._support import fail, running_state
from facesvc.settings import Settings


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
    from rich.progress import Progress

    from facesvc.db.engine import session_scope
    from facesvc.security.keys import Caller
    from facesvc.services.folder_enrolment import FolderReport, enrol_folder, people_in
    from facesvc.services.tenants import tenant_named_or_new

    if not consent:
        raise fail("faces are biometric data: pass --consent to confirm it was given", 2)
    people = people_in(folder)
    if not people:
        raise fail(f"no NAME/photo folders with images under {folder}", 2)

    async def run() -> FolderReport:
        async with running_state(Settings()) as state:
            async with session_scope(state.sessionmaker) as session:
                found = await tenant_named_or_new(session, tenant)
                caller = Caller.operator(found.id, "cli enrol")
            await state.gallery.refresh()
            with Progress() as bar:
                task = bar.add_task(
                    f"enrolling {len(people)} people", total=sum(len(p) for _, p in people)
                )
                return await enrol_folder(
                    folder,
                    state.sessionmaker,
                    state.analysis,
                    state.gallery,
                    caller,
                    consent=True,
                    options=state.policies.enrolment,
                    concurrency=concurrency,
                    progress=lambda n: bar.advance(task, n),
                )

    report = asyncio.run(run())
    typer.echo(
        f"{report.people} people ({report.users_created} new users), "
        f"{report.enrolled} faces enrolled, failed: {_counts(report.failed)}"
    )


def reembed(
    batch: Annotated[int, typer.Option(min=1, max=1024, help="Faces per transaction")] = 32,
) -> None:
    """Recompute the embeddings of faces stored by another model (after changing
    FACESVC_EMBEDDER to a new embedding space) from their kept crops; safe to re-run."""
    from rich.progress import Progress

    from facesvc.services.reembed import ReembedReport, reembed_stale_faces

    async def run() -> tuple[ReembedReport, str]:
        async with running_state(Settings()) as state:
            with Progress() as bar:
                task = bar.add_task("re-embedding", total=None)
                report = await reembed_stale_faces(
                    state.sessionmaker,
                    state.cipher,
                    state.analysis,
                    state.gallery,
                    batch=batch,
                    progress=lambda n: bar.advance(task, n),
                )
            return report, state.pipeline.embedding_space

    report, space = asyncio.run(run())
    typer.echo(
        f"faces from other models: {_counts(report.before)}; re-embedded {report.reembedded} "
        f"with {space!r}; failed: {_counts(report.failed)}; without a crop (enrol them again): "
        f"{report.without_crop}"
    )


def _counts(counts: dict[str, int]) -> str:
    """``key: n, ...`` sorted by key; ``none`` when empty."""
    return ", ".join(f"{key}: {n}" for key, n in sorted(counts.items())) or "none"
