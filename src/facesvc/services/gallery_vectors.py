"""Filling faces.vector (the pgvector backend's column) from the encrypted embeddings: for
faces enrolled before the switch to FACESVC_GALLERY_BACKEND=pgvector, after a model change,
or to give the column another size (``--resize``). Safe to re-run: it only fills what is
missing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.repositories.face_vectors import FaceVectors
from facesvc.security.crypto import EmbeddingCipher

# From this many vectors to write, the HNSW index is dropped first and built once at the end
# (one bulk build is much faster than as many single insertions).
REBUILD_FROM = 10_000


class VectorColumnError(RuntimeError):
    """faces.vector cannot be filled as asked (no column, or another size)."""


@dataclass
class FillReport:
    dimension: int
    resized: bool = False
    cleared: int = 0  # vectors of other models' faces removed
    filled: int = 0
    index_built: bool = False


async def fill_vectors(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: EmbeddingCipher,
    model_name: str,
    dim: int,
    *,
    resize: bool = False,
    batch: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> FillReport:
    """Give every face of ``model_name`` its vector; ``progress(done, total)`` per batch."""
    report = FillReport(dim)
    async with session_scope(sessionmaker) as session:
        vectors = FaceVectors(session)
        column = await vectors.column()
        if column.dimension is None:
            raise VectorColumnError(
                "faces.vector is missing: it needs PostgreSQL with the pgvector extension and "
                "migration 0007 (`facesvc db upgrade`)"
            )
        if column.dimension != dim:
            if not resize:
                raise VectorColumnError(
                    f"faces.vector holds {column.dimension}-d vectors, the embedder makes "
                    f"{dim}-d ones: pass --resize to rebuild the column at {dim}"
                )
            await vectors.resize(dim)
            report.resized = True
        report.cleared = await vectors.clear_other_models(model_name)
        total = await vectors.missing(model_name)
        indexed = column.indexed and not report.resized
        if indexed and total >= REBUILD_FROM:
            await vectors.drop_index()
            indexed = False
    done = 0
    while done < total:
        async with session_scope(sessionmaker) as session:
            n = await FaceVectors(session).fill_batch(cipher, model_name, dim, batch)
        if n == 0:
            break
        done += n
        report.filled = done
        if progress is not None:
            progress(done, total)
    async with session_scope(sessionmaker) as session:
        vectors = FaceVectors(session)
        if not indexed:
            await vectors.create_index()
            report.index_built = True
        # fresh statistics: the planner walks the HNSW index for a large tenant and sorts a
        # small tenant's faces exactly; with none (after a bulk fill) it misjudges both
        await vectors.analyze()
    return report
