"""The in-process gallery backend (``exact``, ``ivf``, ``hnsw``): keeping each worker's 1:N index
in step with SQL (see facesvc.gallery.index) by reloading it when the version moved. The change
hooks, and the one way services reach the faces table (through the data key the gallery
decrypts with), are facesvc.gallery.local_copy's."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.gallery.backend import GallerySearch, GalleryStats
from facesvc.gallery.index import GalleryIndex
from facesvc.gallery.local_copy import LocalCopyGallery
from facesvc.repositories.gallery import GalleryStateRepository
from facesvc.security.crypto import EmbeddingCipher


class GallerySync(LocalCopyGallery[GalleryIndex]):
    """A facesvc.gallery.backend.Gallery holding every face in this process."""

    def __init__(
        self,
        index: GalleryIndex,
        cipher: EmbeddingCipher,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        name: str = "exact",
    ) -> None:
        super().__init__(index, cipher, sessionmaker, name)

    async def start(self, dim: int) -> GalleryStats:
        self.index.use_dimension(dim)
        await self.refresh()
        return GalleryStats(self.name, len(self.index), self.index.users)

    async def search(self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID) -> GallerySearch:
        index = self.index
        if index.version < 0:  # a change this worker could not apply: reload first
            await self.refresh()
        return GallerySearch(index.search(query, top_k, tenant_id), index.faces_of(tenant_id))

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
