"""API keys (and the tenant settings read with one)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import ApiKey, Tenant


class TenantFlags(NamedTuple):
    """The tenant settings a caller carries (``Caller``), read with its key."""

    require_liveness: bool
    sensitive_attributes: bool


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self, tenant_id: uuid.UUID, name: str, prefix: str, secret_sha256: str, scopes: str
    ) -> ApiKey:
        key = ApiKey(
            tenant_id=tenant_id,
            name=name,
            prefix=prefix,
            secret_sha256=secret_sha256,
            scopes=scopes,
        )
        self._session.add(key)
        await self._session.flush()
        return key

    async def by_hash_with_tenant_flags(
        self, secret_sha256: str
    ) -> tuple[ApiKey, TenantFlags] | None:
        """The key and its tenant's ``require_liveness`` and ``sensitive_attributes``, in one
        query."""
        stmt = (
            select(ApiKey, Tenant.require_liveness, Tenant.sensitive_attributes)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.secret_sha256 == secret_sha256)
        )
        row = (await self._session.execute(stmt)).one_or_none()
        return None if row is None else (row[0], TenantFlags(bool(row[1]), bool(row[2])))

    async def get(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
        return (await self._session.scalars(stmt)).one_or_none()

    async def list_for_tenant(self, tenant_id: uuid.UUID) -> list[ApiKey]:
        stmt = (
            select(ApiKey)
            .where(ApiKey.tenant_id == tenant_id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
        return list((await self._session.scalars(stmt)).all())

    async def count_all(self) -> int:
        return int(await self._session.scalar(select(func.count()).select_from(ApiKey)) or 0)

    async def revoke(self, key: ApiKey, when: datetime) -> None:
        key.revoked_at = when
        await self._session.flush()

    async def is_revoked(self, key_id: uuid.UUID) -> bool:
        """True when the key was revoked (or no longer exists)."""
        key = await self._session.get(ApiKey, key_id)
        return key is None or key.revoked_at is not None
