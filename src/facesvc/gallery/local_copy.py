"""What the backends that keep a copy of the faces in each worker share: ``exact``, ``ivf`` and
``hnsw`` (facesvc.gallery.sync.GallerySync) and ``embedded`` (facesvc.gallery.lean.LeanGallery).

Every change bumps ``gallery_state.version`` and logs what it changed (``gallery_changes``) in
the caller's transaction; after the commit, this worker applies it to its copy (``_applied``),
and the other workers catch up when they see the version move (``ensure_current``). The faces
table is reached through the gallery, which holds the data key its embeddings are sealed with.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import after_commit, session_scope
from facesvc.gallery.backend import Gallery
from facesvc.gallery.index import GalleryChange
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.gallery import GalleryStateRepository
from facesvc.security.crypto import EmbeddingCipher


class LocalIndex(Protocol):
    """A worker's copy of one model's faces, changed one committed version at a time."""

    model_name: str

    def __len__(self) -> int: ...

    def apply(self, version: int, change: tuple[object, ...]) -> None: ...


IndexT = TypeVar("IndexT", bound=LocalIndex)


class LocalCopyGallery(Gallery, ABC, Generic[IndexT]):
    """A facesvc.gallery.backend.Gallery holding the faces in this worker (``index``)."""

    def __init__(
        self,
        index: IndexT,
        cipher: EmbeddingCipher,
        sessionmaker: async_sessionmaker[AsyncSession] | None,
        name: str,
    ) -> None:
        self.index = index
        self.name = name
        self._cipher = cipher
        self._sessionmaker = sessionmaker

    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessionmaker is None:
            raise RuntimeError(f"{type(self).__name__} was built without a sessionmaker")
        return self._sessionmaker

    def faces(self, session: AsyncSession) -> FaceRepository:
        """The faces table in ``session``, embeddings sealed and opened with the data key."""
        return FaceRepository(session, self._cipher)

    async def refresh(self) -> None:
        async with session_scope(self._sessions()) as session:
            await self.ensure_current(session)

    @abstractmethod
    async def ensure_current(self, session: AsyncSession) -> IndexT:
        """Bring ``index`` up to the database's gallery version (``session`` is committed)."""

    def size(self) -> int | None:
        return len(self.index)

    async def _record(self, session: AsyncSession, change: GalleryChange) -> None:
        state = GalleryStateRepository(session)
        version = await state.bump()
        # logged for the embedded backend's workers (a switch of backend keeps the log whole)
        await state.log_change(version, change.kind, change.key, self._cipher)
        after_commit(session, lambda: self._applied(version, change))

    def _applied(self, version: int, change: GalleryChange) -> None:
        """After the commit: the change reaches this worker's copy."""
        self.index.apply(version, change)

    async def face_added(
        self,
        session: AsyncSession,
        face_id: uuid.UUID,
        user_id: uuid.UUID,
        vector: np.ndarray,
        model_name: str,
        tenant_id: uuid.UUID,
    ) -> None:
        if model_name == self.index.model_name:
            await self._record(session, GalleryChange("add", face_id, user_id, vector, tenant_id))

    async def face_removed(self, session: AsyncSession, face_id: uuid.UUID) -> None:
        await self._record(session, GalleryChange("remove_face", face_id))

    async def user_removed(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        await self._record(session, GalleryChange("remove_user", user_id))
