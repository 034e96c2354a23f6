"""Keeping the in-memory 1:N index in step with SQL (see facesvc.gallery.index), and the one
way services reach the faces table (through the data key the gallery decrypts with)."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.engine import after_commit
from facesvc.gallery.index import GalleryChange, GalleryIndex
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.gallery import GalleryStateRepository
from facesvc.security.crypto import EmbeddingCipher


class GallerySync:
    def __init__(self, index: GalleryIndex, cipher: EmbeddingCipher) -> None:
        self.index = index
        self._cipher = cipher

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
        version = await GalleryStateRepository(session).bump()
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
