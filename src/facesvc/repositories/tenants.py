"""Tenants."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import Tenant


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_name(self, name: str) -> Tenant | None:
        return (await self._session.scalars(select(Tenant).where(Tenant.name == name))).first()

    async def get(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self._session.get(Tenant, tenant_id)

    async def get_or_create(self, name: str) -> Tenant:
        tenant = await self.by_name(name)
        if tenant is None:
            tenant = Tenant(name=name)
            self._session.add(tenant)
            await self._session.flush()
        return tenant

    async def list_all(self) -> list[Tenant]:
        return list((await self._session.scalars(select(Tenant).order_by(Tenant.name))).all())
