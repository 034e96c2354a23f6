"""The in-process gallery backend (``exact``, ``ivf``, ``hnsw``): keeping each worker's 1:N index
in step with SQL (see facesvc.gallery.index), and the one way services reach the faces table
(through the data key the gallery decrypts with)."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import after_commit, session_scope
from facesvc.gallery.backend import GallerySearch, GalleryStats
from facesvc.gallery.index import GalleryChange, GalleryIndex
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.gallery import GalleryStateRepository
from facesvc.security.crypto import EmbeddingCipher


class GallerySync:
    """A facesvc.gallery.backend.Gallery holding every face in this process."""

    def __init__(
        self,
        index: GalleryIndex,
        cipher: EmbeddingCipher,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        name: str = "exact",
    ) -> None:
        self.index = index
        self.name = name
        self._cipher = cipher
        self._sessionmaker = sessionmaker

    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessionmaker is None:
            raise RuntimeError("GallerySync was built without a sessionmaker")
        return self._sessionmaker

    async def start(self, dim: int) -> GalleryStats:
        self.index.use_dimension(dim)
        await self.refresh()
        return GalleryStats(self.name, len(self.index), self.index.users)

    async def refresh(self) -> None:
        async with session_scope(self._sessions()) as session:
            await self.ensure_current(session)

    async def search(self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID) -> GallerySearch:
        index = self.index
        if index.version < 0:  # a change this worker could not apply: reload first
            await self.refresh()
        return GallerySearch(index.search(query, top_k, tenant_id), index.faces_of(tenant_id))

    def size(self) -> int | None:
        return len(self.index)

    def faces(self, session: AsyncSession) -> FaceRepository:
        """The faces table in ``session``, embeddings sealed and opened with the data key."""
        return FaceRepository(session, self._cipher)

    async def ensure_current(self, session: AsyncSession) -> GalleryIndex:
        """Reload the index if the database's gallery version moved past it. ``session`` must
        be a session of its own: it is committed here (so no connection is held while a
        reload is awaited or an ANN structure is built)."""
        index = self.index
        state = GalleryStateRepository(session)
        if await state.version() == index.version:
            return index
        # The connection (and its read snapshot) goes back to the pool while this waits for
        # another reload, and again before the ANN build: neither holds one.
        await session.commit()
        async with index.lock:
            version = await state.version()
            if version != index.version:
                faces = self.faces(session)
                face_ids, user_ids, tenant_ids, matrix = await faces.all_embeddings(
                    index.model_name
                )
                await session.commit()
                ann = await asyncio.to_thread(index.prepare_ann, face_ids, matrix)
                index.replace(face_ids, user_ids, matrix, version, tenant_ids, ann=ann)
        return index

    async def _record(self, session: AsyncSession, change: GalleryChange) -> None:
        state = GalleryStateRepository(session)
        version = await state.bump()
        # logged for the embedded backend's workers (a switch of backend keeps the log whole)
        await state.log_change(version, change.kind, change.key, self._cipher)
        after_commit(session, lambda: self.index.apply(version, change))

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
