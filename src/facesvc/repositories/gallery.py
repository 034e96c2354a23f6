"""The gallery version row (see facesvc.gallery.index) and the log of what each version
changed (see facesvc.gallery.lean)."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import GalleryChange, GalleryState
from facesvc.security.crypto import EmbeddingCipher

# Versions of the change log kept: a worker further behind reloads the whole gallery.
CHANGES_KEPT = 100_000
# Associated data of a sealed change (the version is the "row id").
_CHANGE = b":gallery-change"


class GalleryStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def version(self) -> int:
        value = await self._session.scalar(select(GalleryState.version).where(GalleryState.id == 1))
        return int(value or 0)

    async def instance(self) -> str | None:
        """This database's random gallery name (migration 0008)."""
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

    async def log_change(
        self, version: int, kind: str, key: uuid.UUID, cipher: EmbeddingCipher
    ) -> None:
        """Record what ``version`` changed (inside the transaction that bumped it), the id
        sealed with the data key; every 1,000 versions the log forgets those older than
        CHANGES_KEPT."""
        sealed, key_id = cipher.encrypt(key.bytes, uuid.UUID(int=version), _CHANGE)
        await self._session.execute(
            insert(GalleryChange).values(
                version=version, kind=kind, sealed_key=sealed, key_id=key_id
            )
        )
        if version % 1000 == 0:
            await self._session.execute(
                delete(GalleryChange).where(GalleryChange.version <= version - CHANGES_KEPT)
            )

    async def changes_since(
        self, version: int, cipher: EmbeddingCipher, limit: int = 10_000
    ) -> list[tuple[int, str, uuid.UUID]]:
        """Up to ``limit`` logged changes after ``version``, oldest first (DecryptionError or
        EncryptionKeyError when a change was sealed under a key no longer configured)."""
        stmt = (
            select(
                GalleryChange.version,
                GalleryChange.kind,
                GalleryChange.sealed_key,
                GalleryChange.key_id,
            )
            .where(GalleryChange.version > version)
            .order_by(GalleryChange.version)
            .limit(limit)
        )
        return [
            (
                int(v),
                str(kind),
                uuid.UUID(bytes=cipher.decrypt(sealed, key_id, uuid.UUID(int=int(v)), _CHANGE)),
            )
            for v, kind, sealed, key_id in (await self._session.execute(stmt)).all()
        ]
