"""Data-key rotation: every stored embedding, and every photo waiting in a job, re-encrypted
under the first (active) key of FACESVC_ENCRYPTION_KEY, then recorded in each tenant's audit
trail. Rows already under the active key are left alone, so a rotation is safe to re-run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.jobs import JobRepository
from facesvc.repositories.tenants import TenantRepository
from facesvc.security.crypto import EmbeddingCipher
from facesvc.security.keys import Caller
from facesvc.services.audit import AuditTrail


@dataclass(frozen=True)
class DataKeyRotation:
    key_id: str  # the active key everything is now under
    faces: int  # faces re-encrypted (the others were under it already)
    photos: int  # photos waiting in jobs re-encrypted
    faces_by_key: dict[str | None, int]  # after the rotation; None: in the clear


async def rotate_data_keys(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: EmbeddingCipher,
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> DataKeyRotation:
    """Re-encrypt under ``cipher``'s active key, ``batch`` faces per transaction;
    ``progress(faces seen, faces in all)`` after each batch (and once before the first)."""
    key_id = cipher.active_key_id
    if key_id is None:
        raise ValueError("no active data key: nothing to encrypt with")
    faces = await _reencrypt_faces(sessionmaker, cipher, batch, progress or (lambda _n, _of: None))
    async with session_scope(sessionmaker) as session:
        photos = await JobRepository(session).reencrypt_pending_images(cipher)
    async with session_scope(sessionmaker) as session:
        for tenant in await TenantRepository(session).list_all():
            await AuditTrail(session, Caller.operator(tenant.id)).record(
                "data.rotate", f"ok:{key_id}"
            )
        counts = await FaceRepository(session, cipher).key_id_counts()
    return DataKeyRotation(key_id, faces, photos, counts)


async def _reencrypt_faces(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: EmbeddingCipher,
    batch: int,
    progress: Callable[[int, int], None],
) -> int:
    async with session_scope(sessionmaker) as session:
        total = sum((await FaceRepository(session, cipher).key_id_counts()).values())
    progress(0, total)
    changed, seen = 0, 0
    after: uuid.UUID | None = None
    while True:
        async with session_scope(sessionmaker) as session:
            n, after = await FaceRepository(session, cipher).reencrypt_batch(after, batch)
        changed += n
        seen = min(seen + batch, total) if after is not None else total
        progress(seen, total)
        if after is None:
            return changed
