"""What the services need from a gallery backend (``FACESVC_GALLERY_BACKEND``).

SQL is the source of truth for who is enrolled. A backend answers 1:N searches over one
tenant's faces and hears of every committed change inside its transaction:

- the in-process index (``exact``, ``ivf``, ``hnsw``: facesvc.gallery.sync.GallerySync), a copy of
  the vectors in each worker kept in step by a version row;
- ``pgvector``: the vectors in a column of the faces table, searched by PostgreSQL itself, so API
  replicas keep nothing.

A dedicated engine (Milvus, Qdrant, ...) would be a third implementation of this protocol: it
hears ``face_added`` / ``face_removed`` / ``user_removed`` in the transaction that makes them
(an outbox row for an engine outside the database), and answers ``search`` for one tenant.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import Face
from facesvc.repositories.face_vectors import FaceVectors
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.gallery import GalleryStateRepository


@dataclass(frozen=True)
class Hit:
    """A user's best face for a probe, scored exactly (cosine similarity of unit vectors)."""

    user_id: uuid.UUID
    face_id: uuid.UUID
    similarity: float


@dataclass(frozen=True)
class GallerySearch:
    """The ``top_k`` users of a tenant for one probe (best first) and how many faces of that
    tenant were searched: the 1:N threshold follows the gallery's size."""

    hits: list[Hit]
    tenant_faces: int


@dataclass(frozen=True)
class GalleryStats:
    """What a start-up loaded or found: logged and shown by /readyz."""

    backend: str
    faces: int | None  # None: not counted (the database holds them)
    users: int | None

    def describe(self) -> str:
        if self.faces is None:
            return f"gallery backend {self.backend}: faces stay in the database"
        return f"gallery backend {self.backend}: {self.faces} faces of {self.users} users loaded"


class Gallery(Protocol):
    """A 1:N gallery. Every change hook runs inside the caller's transaction (a rollback
    leaves the gallery as it was); ``search`` sees every change committed before it began."""

    name: str

    def faces(self, session: AsyncSession) -> FaceRepository:
        """The faces table in ``session``, embeddings sealed and opened with the data key."""
        ...

    async def start(self, dim: int) -> GalleryStats:
        """Check the configuration against the loaded embedder's dimension and load what the
        backend keeps; raises ConfigurationError (a clear /readyz 503) when it cannot work."""
        ...

    async def refresh(self) -> None:
        """Bring a local copy up to date (run while a probe is analysed); may do nothing."""
        ...

    async def search(
        self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID
    ) -> GallerySearch: ...

    def size(self) -> int | None:
        """Faces held locally (the /metrics gauge); None when the backend holds none."""
        ...

    async def face_added(
        self,
        session: AsyncSession,
        face_id: uuid.UUID,
        user_id: uuid.UUID,
        vector: np.ndarray,
        model_name: str,
        tenant_id: uuid.UUID,
    ) -> None: ...

    async def face_removed(self, session: AsyncSession, face_id: uuid.UUID) -> None: ...

    async def user_removed(self, session: AsyncSession, user_id: uuid.UUID) -> None: ...

    # Storing, removing and re-embedding a face: the row and the backend's hook in one call,
    # in the caller's transaction, so no use case writes one without the other. Every backend
    # subclasses Gallery and inherits these (its ``faces`` and hooks do the rest).

    async def store_face(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        vector: np.ndarray,
        *,
        tenant_id: uuid.UUID,
        model_name: str,
        **row: Any,
    ) -> Face:
        """``row``: FaceRepository.add's other fields (model_version, box, image_size, ...)."""
        face = await self.faces(session).add(user_id, vector, model_name=model_name, **row)
        await self.face_added(session, face.id, user_id, vector, model_name, tenant_id)
        return face

    async def remove_face(self, session: AsyncSession, face: Face) -> None:
        face_id = face.id
        await self.faces(session).delete(face)
        await self.face_removed(session, face_id)

    async def replace_embedding(
        self,
        session: AsyncSession,
        face_id: uuid.UUID,
        vector: np.ndarray,
        *,
        model_name: str,
        model_version: str,
        vector_dim: int | None,
    ) -> None:
        """A stored face's new embedding (``facesvc reembed``), with faces.vector kept in step
        on PostgreSQL (``vector_dim``: that column's size, None without one): the new vector
        when it has that size, none otherwise (``facesvc gallery pgvector-fill --resize``).
        Workers see it after ``embeddings_replaced``."""
        await self.faces(session).replace_embedding(
            face_id, vector, model_name=model_name, model_version=model_version
        )
        if vector_dim is not None:
            vectors = FaceVectors(session)
            if vector_dim == vector.shape[0]:
                await vectors.put(face_id, vector)
            else:
                await vectors.clear(face_id)

    async def embeddings_replaced(self, session: AsyncSession) -> None:
        """After a batch of ``replace_embedding``: one version for the batch, logged as no
        single change, so every worker's copy reloads (the embedded snapshot is rebuilt)."""
        await GalleryStateRepository(session).bump()
