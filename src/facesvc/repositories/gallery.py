"""The gallery version row (see facesvc.gallery.index)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import GalleryState


class GalleryStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def version(self) -> int:
        value = await self._session.scalar(select(GalleryState.version).where(GalleryState.id == 1))
        return int(value or 0)

    async def bump(self) -> int:
        """Increment the version inside the caller's transaction; returns the new value."""
        await self._session.execute(
            update(GalleryState)
            .where(GalleryState.id == 1)
            .values(version=GalleryState.version + 1)
        )
        return await self.version()
