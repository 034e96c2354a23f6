"""API keys: create (shown once), authenticate, list, revoke; the bootstrap admin key."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import DEFAULT_TENANT_NAME, ApiKey, Tenant, utcnow
from facesvc.repositories.keys import ApiKeyRepository, TenantRepository
from facesvc.security.keys import (
    KEY_PREFIX,
    Caller,
    display_prefix,
    generate_api_key,
    hash_api_key,
    hashes_match,
    normalise_scopes,
)
from facesvc.services.audit import AuditTrail
from facesvc.services.errors import KeyNotFoundError

log = logging.getLogger(__name__)


async def authenticate(session: AsyncSession, presented: str) -> Caller | None:
    """The caller a presented key stands for, or None (unknown or revoked key)."""
    digest = hash_api_key(presented)
    key = await ApiKeyRepository(session).by_hash(digest)
    if key is None or key.revoked_at is not None or not hashes_match(digest, key.secret_sha256):
        return None
    return Caller(tenant_id=key.tenant_id, key_id=key.id, actor=key.name, scopes=key.scope_set)


async def ensure_bootstrap_key(session: AsyncSession, key: str) -> bool:
    """Store ``key`` as an admin key of the default tenant if no key exists yet."""
    keys = ApiKeyRepository(session)
    if await keys.count_all():
        return False
    tenant = await TenantRepository(session).get_or_create(DEFAULT_TENANT_NAME)
    # an operator-chosen key may be short: show too little of it to help a guess
    shown = display_prefix(key) if key.startswith(KEY_PREFIX) else key[:4]
    row = await keys.add(
        tenant.id, "bootstrap", shown, hash_api_key(key), normalise_scopes(["admin"])
    )
    await AuditTrail(session, Caller.operator(tenant.id, "bootstrap")).record("key.create", "ok")
    log.info("bootstrap admin key %s... stored for tenant %r", row.prefix, tenant.name)
    return True


class ApiKeyService:
    """Keys of the caller's tenant."""

    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.keys = ApiKeyRepository(session)
        self.audit = AuditTrail(session, caller)

    async def create(self, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
        """The stored key and its secret, which is never available again."""
        secret = generate_api_key()
        row = await self.keys.add(
            self.caller.tenant_id,
            name,
            display_prefix(secret),
            hash_api_key(secret),
            normalise_scopes(scopes),
        )
        await self.audit.record("key.create", "ok")
        return row, secret

    async def list(self) -> list[ApiKey]:
        return await self.keys.list_for_tenant(self.caller.tenant_id)

    async def revoke(self, key_id: uuid.UUID) -> ApiKey:
        key = await self.keys.get(self.caller.tenant_id, key_id)
        if key is None:
            raise KeyNotFoundError(f"no API key with id {key_id}")
        if key.revoked_at is None:
            await self.keys.revoke(key, utcnow())
            await self.audit.record("key.revoke", "ok")
        return key


async def tenant_named(session: AsyncSession, name: str) -> Tenant | None:
    return await TenantRepository(session).by_name(name)


async def tenant_named_or_new(session: AsyncSession, name: str) -> Tenant:
    return await TenantRepository(session).get_or_create(name)
