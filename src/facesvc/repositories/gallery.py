"""The gallery version row (see facesvc.gallery.index) and the log of what each version
changed (see facesvc.gallery.lean)."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import GalleryChange, GalleryState

# Versions of the change log kept: a worker further behind reloads the whole gallery.
CHANGES_KEPT = 100_000


class GalleryStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def version(self) -> int:
        value = await self._session.scalar(select(GalleryState.version).where(GalleryState.id == 1))
        return int(value or 0)

    async def instance(self) -> str | None:
        """This database's random gallery name (migration 0007)."""
        value = await self._session.scalar(
            select(GalleryState.instance).where(GalleryState.id == 1)
        )
        return None if value is None else str(value)

    async def bump(self) -> int:
        """Increment the version inside the caller's transaction; returns the new value."""
        await self._session.execute(
            update(GalleryState)
            .where(GalleryState.id == 1)
            .values(version=GalleryState.version + 1)
        )
        return await self.version()

    async def log_change(self, version: int, kind: str, key: uuid.UUID) -> None:
        """Record what ``version`` changed (inside the transaction that bumped it); every
        1,000 versions the log forgets those older than CHANGES_KEPT."""
        await self._session.execute(
            insert(GalleryChange).values(version=version, kind=kind, key=key)
        )
        if version % 1000 == 0:
            await self._session.execute(
                delete(GalleryChange).where(GalleryChange.version <= version - CHANGES_KEPT)
            )

    async def changes_since(
        self, version: int, limit: int = 10_000
    ) -> list[tuple[int, str, uuid.UUID]]:
        """Up to ``limit`` logged changes after ``version``, oldest first."""
        stmt = (
            select(GalleryChange.version, GalleryChange.kind, GalleryChange.key)
            .where(GalleryChange.version > version)
            .order_by(GalleryChange.version)
            .limit(limit)
        )
        return [(int(v), str(k), key) for v, k, key in (await self._session.execute(stmt)).all()]
