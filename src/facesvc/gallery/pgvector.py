"""The ``pgvector`` gallery backend: the vectors live in ``faces.vector`` (migration 0007) and
PostgreSQL answers each 1:N search, so a worker keeps no gallery: nothing to load at start,
nothing to reload, and a face committed through any replica is found by the next search on
every other.

Writes happen in the caller's transaction: an enrolment stores the face's vector beside its
encrypted embedding (``face_added``); deleting a face or a user deletes the row, vector
included. The encrypted column stays the source of truth (key rotation leaves the plaintext
unchanged; ``facesvc reembed`` and ``facesvc gallery pgvector-fill`` rewrite the column).
"""

from __future__ import annotations

import time
import uuid

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import is_sqlite, session_scope
from facesvc.gallery.backend import Gallery, GallerySearch, GalleryStats, Hit
from facesvc.repositories.face_vectors import FaceVectors
from facesvc.repositories.faces import FaceRepository
from facesvc.security.crypto import EmbeddingCipher

# The candidate pool one search asks the index for (best face per user is taken from it).
POOL_PER_RESULT = 8
MIN_POOL = 32
# Counting a tenant's faces scans them: from this many on, a count is reused for half a
# minute (the 1:N threshold moves with log N: half a minute's enrolments do not change it).
COUNT_CACHE_FROM = 1_000
COUNT_CACHE_S = 30.0
FILL_HINT = "`facesvc gallery pgvector-fill`"


class PgVectorGallery(Gallery):
    """A facesvc.gallery.backend.Gallery whose vectors stay in PostgreSQL."""

    name = "pgvector"

    def __init__(
        self,
        cipher: EmbeddingCipher,
        sessionmaker: async_sessionmaker[AsyncSession],
        database_url: str,
        model_name: str,
        ef_search: int = 200,
    ) -> None:
        self._cipher = cipher
        self._sessionmaker = sessionmaker
        self._database_url = database_url
        self.model_name = model_name
        self.ef_search = ef_search
        self._counts: dict[uuid.UUID, tuple[int, float]] = {}

    def faces(self, session: AsyncSession) -> FaceRepository:
        return FaceRepository(session, self._cipher)

    async def start(self, dim: int) -> GalleryStats:
        from facesvc.errors import ConfigurationError

        if is_sqlite(self._database_url):
            raise ConfigurationError(
                "FACESVC_GALLERY_BACKEND=pgvector needs PostgreSQL with the pgvector extension, "
                "but FACESVC_DATABASE_URL is a SQLite database (use exact, ivf or hnsw there)"
            )
        async with session_scope(self._sessionmaker) as session:
            vectors = FaceVectors(session)
            column = await vectors.column()
            if column.extension is None:
                raise ConfigurationError(
                    "FACESVC_GALLERY_BACKEND=pgvector: the database has no `vector` extension "
                    "(install pgvector on the PostgreSQL server, then `facesvc db downgrade 0006 "
                    "&& facesvc db upgrade` adds faces.vector; CREATE EXTENSION needs the "
                    "rights to create it)"
                )
            if _version(column.extension) < (0, 8):
                raise ConfigurationError(
                    f"FACESVC_GALLERY_BACKEND=pgvector needs pgvector 0.8 or later (iterative "
                    f"index scans keep a tenant's results whole), the database has "
                    f"{column.extension}: upgrade the extension (ALTER EXTENSION vector UPDATE)"
                )
            if column.dimension is None:
                raise ConfigurationError(
                    "FACESVC_GALLERY_BACKEND=pgvector: faces.vector is missing (migration 0007 "
                    "adds it where the extension is available: `facesvc db upgrade`, or "
                    "`facesvc db downgrade 0006 && facesvc db upgrade` if 0007 ran before "
                    "pgvector was installed)"
                )
            if column.dimension != dim:
                raise ConfigurationError(
                    f"FACESVC_GALLERY_BACKEND=pgvector: faces.vector holds {column.dimension}-d "
                    f"vectors but the embedder {self.model_name!r} makes {dim}-d ones: run "
                    f"{FILL_HINT} --resize (or set FACESVC_PGVECTOR_DIM={dim} before "
                    "migration 0007 on a new database)"
                )
            missing = await vectors.missing(self.model_name)
            if missing:
                raise ConfigurationError(
                    f"FACESVC_GALLERY_BACKEND=pgvector: {missing} faces of {self.model_name!r} "
                    f"have no vector in faces.vector (enrolled before the switch to pgvector): "
                    f"run {FILL_HINT} first"
                )
            if not column.indexed:  # works, but every search scans the tenant's faces
                import logging

                logging.getLogger("facesvc").warning(
                    "faces.vector has no HNSW index: run %s to build it", FILL_HINT
                )
        return GalleryStats(self.name, None, None)

    async def refresh(self) -> None:
        """Nothing to bring up to date: every search reads the database."""

    def size(self) -> int | None:
        return None

    async def search(self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID) -> GallerySearch:
        pool = max(MIN_POOL, top_k * POOL_PER_RESULT)
        async with session_scope(self._sessionmaker) as session:
            vectors = FaceVectors(session)
            found = await vectors.nearest(
                query, tenant_id, self.model_name, pool, max(self.ef_search, pool)
            )
            faces = await self._tenant_faces(vectors, tenant_id)
        hits = [Hit(c.user_id, c.face_id, c.similarity) for c in found[:top_k]]
        return GallerySearch(hits, max(faces, len(found)))

    async def _tenant_faces(self, vectors: FaceVectors, tenant_id: uuid.UUID) -> int:
        cached = self._counts.get(tenant_id)
        now = time.monotonic()
        if cached is not None and now - cached[1] < COUNT_CACHE_S:
            return cached[0]
        count = await vectors.tenant_faces(tenant_id, self.model_name)
        if count >= COUNT_CACHE_FROM:
            self._counts[tenant_id] = (count, now)
        else:
            self._counts.pop(tenant_id, None)
        return count

    async def face_added(
        self,
        session: AsyncSession,
        face_id: uuid.UUID,
        user_id: uuid.UUID,
        vector: np.ndarray,
        model_name: str,
        tenant_id: uuid.UUID,
    ) -> None:
        if model_name == self.model_name:
            await FaceVectors(session).put(face_id, vector)

    async def face_removed(self, session: AsyncSession, face_id: uuid.UUID) -> None:
        """The vector went with the row (same table, same transaction)."""

    async def user_removed(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """The user's rows went (ON DELETE CASCADE), vectors with them."""


def _version(text: str) -> tuple[int, ...]:
    """'0.8.2' -> (0, 8, 2); anything unreadable sorts first."""
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)
