"""``facesvc gallery ...``: the gallery backend's own upkeep (pgvector's column)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from facesvc.cli._support import fail, running_state
from facesvc.settings import Settings

gallery_app = typer.Typer(help="Gallery backend upkeep (pgvector).", no_args_is_help=True)


@gallery_app.command("pgvector-fill")
def pgvector_fill(
    resize: Annotated[
        bool,
        typer.Option(
            "--resize", help="Rebuild faces.vector at the loaded embedder's size (refills it)"
        ),
    ] = False,
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="Faces per transaction")] = 1000,
) -> None:
    """Fill faces.vector from the encrypted embeddings (faces enrolled before switching to
    FACESVC_GALLERY_BACKEND=pgvector, or after a model change), then build its HNSW index;
    safe to re-run."""
    from rich.progress import Progress

    from facesvc.services.gallery_vectors import FillReport, VectorColumnError, fill_vectors

    async def run() -> FillReport:
        async with running_state(Settings()) as state:
            with Progress() as bar:
                task = bar.add_task("filling faces.vector", total=None)
                return await fill_vectors(
                    state.sessionmaker,
                    state.cipher,
                    state.pipeline.embedding_space,
                    state.registry.embedding_dim,
                    resize=resize,
                    batch=batch,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    try:
        report = asyncio.run(run())
    except VectorColumnError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(
        f"faces.vector ({report.dimension}-d{', resized' if report.resized else ''}): "
        f"{report.filled} filled, {report.cleared} of other models cleared, HNSW index "
        f"{'built' if report.index_built else 'kept'}"
    )
