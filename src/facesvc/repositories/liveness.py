"""Liveness sessions and the digests of their frames: SQL only (facesvc.services.liveness
decides what they mean).

Every change of a session is one ``UPDATE ... WHERE version = <read>``: of two requests
that change one session at once, only the first matches; the other is told so. Using a
passed session to log in is one ``UPDATE ... WHERE used_at IS NULL``: a session logs in once.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.codec import decode_embedding, encode_embedding
from facesvc.db.models import LivenessFrame, LivenessSession
from facesvc.security.crypto import EmbeddingCipher

_REFERENCE = b":liveness-reference"


class LivenessRepository:
    def __init__(self, session: AsyncSession, cipher: EmbeddingCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def add(self, row: LivenessSession) -> LivenessSession:
        self._session.add(row)
        await self._session.flush()
        return row

    async def get(self, tenant_id: uuid.UUID, session_id: uuid.UUID) -> LivenessSession | None:
        stmt = select(LivenessSession).where(
            LivenessSession.id == session_id, LivenessSession.tenant_id == tenant_id
        )
        return (await self._session.scalars(stmt)).one_or_none()

    def reference(self, row: LivenessSession) -> np.ndarray | None:
        if row.reference is None:
            return None
        plain = self._cipher.decrypt(row.reference, row.key_id, row.id, _REFERENCE)
        return decode_embedding(plain)

    async def save_progress(
        self,
        row: LivenessSession,
        *,
        progress: dict[str, Any],
        status: str,
        reason: str | None,
        reference: np.ndarray | None,
        ended_at: datetime | None,
    ) -> bool:
        """Store the checker's new state if nobody changed the session since ``row`` was
        read; False when somebody did (nothing written)."""
        values: dict[str, Any] = {
            "progress": progress,
            "status": status,
            "reason": reason,
            "ended_at": ended_at,
            "version": row.version + 1,
        }
        if reference is not None and row.reference is None:
            sealed, key_id = self._cipher.encrypt(encode_embedding(reference), row.id, _REFERENCE)
            values.update(reference=sealed, key_id=key_id)
        stmt = (
            update(LivenessSession)
            .where(LivenessSession.id == row.id, LivenessSession.version == row.version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def mark_used(self, row: LivenessSession, now: datetime) -> bool:
        """True for the one request that uses this passed session; False if it was used."""
        stmt = (
            update(LivenessSession)
            .where(LivenessSession.id == row.id, LivenessSession.used_at.is_(None))
            .values(used_at=now, version=LivenessSession.version + 1)
            .execution_options(synchronize_session=False)
        )
        result = await self._session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def used_digests(self, tenant_id: uuid.UUID, digests: Collection[str]) -> set[str]:
        """Which of these frame digests another session of the tenant already used."""
        if not digests:
            return set()
        stmt = select(LivenessFrame.digest).where(
            LivenessFrame.tenant_id == tenant_id, LivenessFrame.digest.in_(list(digests))
        )
        return set((await self._session.scalars(stmt)).all())

    async def add_digests(
        self, tenant_id: uuid.UUID, session_id: uuid.UUID, digests: Collection[str]
    ) -> None:
        self._session.add_all(
            LivenessFrame(tenant_id=tenant_id, digest=d, session_id=session_id) for d in digests
        )
        await self._session.flush()

    async def purge_ended_before(self, tenant_id: uuid.UUID, before: datetime) -> int:
        """Delete the tenant's sessions that expired before ``before`` (and, by cascade, the
        digests of their frames)."""
        stmt = delete(LivenessSession).where(
            LivenessSession.tenant_id == tenant_id, LivenessSession.expires_at < before
        )
        result = await self._session.execute(stmt)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
