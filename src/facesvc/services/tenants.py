"""The caller's tenant and its settings."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import Tenant
from facesvc.repositories.keys import TenantRepository
from facesvc.security.keys import Caller
from facesvc.services.audit import AuditTrail
from facesvc.services.keys import forget_cached_callers


class TenantService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.tenants = TenantRepository(session)
        self.audit = AuditTrail(session, caller)

    async def get(self) -> Tenant:
        tenant = await self.tenants.get(self.caller.tenant_id)
        if tenant is None:  # a key's tenant is deleted with the key (cascade)
            raise RuntimeError("the caller's tenant does not exist")
        return tenant

    async def update(self, *, require_liveness: bool | None = None) -> Tenant:
        tenant = await self.get()
        if require_liveness is not None and require_liveness != tenant.require_liveness:
            tenant.require_liveness = require_liveness
            await self.audit.record(
                "tenant.update", f"require_liveness:{str(require_liveness).lower()}"
            )
            forget_cached_callers(self.session)  # callers carry it (Caller.require_liveness)
        return tenant
