"""Re-embedding after a model change: stored faces whose embeddings came from another
embedding space are recomputed from their kept crops (FACESVC_STORE_FACE_CROPS).

Faces without a crop cannot be recomputed (images are not stored by default): they stay out of
matching (the gallery and verify only use the current space) until re-enrolled from photos.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.errors import ImageError, ServiceError
from facesvc.gallery.backend import Gallery
from facesvc.repositories.face_vectors import FaceVectors
from facesvc.repositories.faces import StaleFaces
from facesvc.security.crypto import EmbeddingCipher
from facesvc.services.analysis import FaceAnalysisService

log = logging.getLogger(__name__)


@dataclass
class ReembedReport:
    before: dict[str, int] = field(default_factory=dict)  # stale faces per old model
    reembedded: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> faces
    without_crop: int = 0


async def stale_face_counts(
    sessionmaker: async_sessionmaker[AsyncSession], cipher: EmbeddingCipher, space: str
) -> dict[str, int]:
    async with session_scope(sessionmaker) as session:
        return await StaleFaces(session, cipher).counts(space)


async def reembed_stale_faces(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: EmbeddingCipher,
    analysis: FaceAnalysisService,
    gallery: Gallery,
    *,
    batch: int = 32,
    progress: Callable[[int], None] | None = None,
) -> ReembedReport:
    """Recompute every stale face that kept a crop, ``batch`` per transaction; each batch
    bumps the gallery version so every worker reloads its index."""
    pipeline = analysis.pipeline
    space, version = pipeline.embedding_space, pipeline.embedder_version
    report = ReembedReport()
    async with session_scope(sessionmaker) as session:
        stale = StaleFaces(session, cipher)
        report.before = await stale.counts(space)
        report.without_crop = await stale.without_crop(space)
        vector_dim = await _vector_column_dim(session)
    after: uuid.UUID | None = None
    failed_ids: set[uuid.UUID] = set()
    while True:
        async with session_scope(sessionmaker) as session:
            stale = StaleFaces(session, cipher)
            rows = await stale.batch_with_crops(space, after, batch)
            if not rows:
                break
            after = rows[-1][0]
            outcomes = await asyncio.gather(
                *(analysis.primary_face(crop) for _, crop in rows), return_exceptions=True
            )
            for (face_id, _), outcome in zip(rows, outcomes, strict=True):
                if isinstance(outcome, ServiceError | ImageError):
                    reason = outcome.slug if isinstance(outcome, ServiceError) else "bad-crop"
                    report.failed[reason] = report.failed.get(reason, 0) + 1
                    failed_ids.add(face_id)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    await gallery.replace_embedding(
                        session,
                        face_id,
                        outcome.embedding,
                        model_name=space,
                        model_version=version,
                        vector_dim=vector_dim,
                    )
                    report.reembedded += 1
            await gallery.embeddings_replaced(session)
        if progress:
            progress(len(rows))
    if failed_ids:
        log.warning("%d faces could not be re-embedded from their crops", len(failed_ids))
    return report


async def _vector_column_dim(session: AsyncSession) -> int | None:
    """The size of faces.vector (PostgreSQL with pgvector, migration 0007), None without it."""
    bind = session.bind
    if bind is None or bind.dialect.name != "postgresql":
        return None
    return (await FaceVectors(session).column()).dimension
