"""Tenants: the caller's tenant and its settings; a tenant by name (the CLI)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import Tenant
from facesvc.repositories.tenants import TenantRepository
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

    async def update(
        self, *, require_liveness: bool | None = None, sensitive_attributes: bool | None = None
    ) -> Tenant:
        """Change the settings given (None: unchanged); each change is audited."""
        tenant = await self.get()
        asked = {"require_liveness": require_liveness, "sensitive_attributes": sensitive_attributes}
        changed = {
            name: value
            for name, value in asked.items()
            if value is not None and value != getattr(tenant, name)
        }
        for name, value in changed.items():
            setattr(tenant, name, value)
            await self.audit.record("tenant.update", f"{name}:{str(value).lower()}")
        if changed:  # callers carry both (Caller.require_liveness, .sensitive_attributes)
            forget_cached_callers(self.session)
        return tenant


async def tenant_named(session: AsyncSession, name: str) -> Tenant | None:
    return await TenantRepository(session).by_name(name)


async def tenant_named_or_new(session: AsyncSession, name: str) -> Tenant:
    return await TenantRepository(session).get_or_create(name)
