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
from typing import Protocol

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.repositories.faces import FaceRepository


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
