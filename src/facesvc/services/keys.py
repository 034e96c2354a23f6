"""API keys: create (shown once), authenticate, list, revoke; the bootstrap admin key."""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import after_commit, session_scope
from facesvc.db.models import DEFAULT_TENANT_NAME, ApiKey, utcnow
from facesvc.errors import KeyNotFoundError
from facesvc.repositories.keys import ApiKeyRepository
from facesvc.repositories.tenants import TenantRepository
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

log = logging.getLogger(__name__)


async def authenticate(session: AsyncSession, presented: str) -> Caller | None:
    """The caller a presented key stands for, or None (unknown or revoked key)."""
    digest = hash_api_key(presented)
    found = await ApiKeyRepository(session).by_hash_with_tenant_flags(digest)
    if found is None:
        return None
    key, flags = found
    if key.revoked_at is not None or not hashes_match(digest, key.secret_sha256):
        return None
    return Caller(
        tenant_id=key.tenant_id,
        key_id=key.id,
        actor=key.name,
        scopes=key.scope_set,
        require_liveness=flags.require_liveness,
        sensitive_attributes=flags.sensitive_attributes,
    )


class KeyChangeStamp:
    """A small file beside a SQLite database, replaced whenever a key is revoked or a tenant
    setting cached with its callers changes (``require_liveness``, ``sensitive_attributes``):
    every worker on the host notices with one read of 16 bytes (microseconds), without a
    query."""

    SUFFIX = "-keys"

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_database(cls, url: str) -> KeyChangeStamp | None:
        """The stamp of a SQLite file database; None for others (PostgreSQL: no cache)."""
        parsed = make_url(url)
        database = parsed.database
        if (
            not parsed.get_backend_name().startswith("sqlite")
            or not database
            or database == ":memory:"
            or database.startswith("file:")
        ):
            return None
        return cls(Path(str(Path(database).resolve()) + cls.SUFFIX))

    def read(self) -> bytes | None:
        """The stamp's random token (inode, size and mtime can repeat: two revocations within
        one clock tick may reuse the freed inode; 16 random bytes do not)."""
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def bump(self) -> None:
        """Replace the file with a new random token, atomically (readers never see a half)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{secrets.token_hex(6)}")
        temporary.write_bytes(secrets.token_bytes(16))
        os.replace(temporary, self.path)


@dataclass(frozen=True)
class _Cached:
    caller: Caller
    expires: float


class CallerCache:
    """The callers of recently used API keys, per worker, so a request needs no key query.

    Exact across workers: every revocation replaces the database's ``KeyChangeStamp`` (a new
    random token) after its commit, and each lookup first compares the stamp with the one its
    entries were read
    under (any change empties the cache). An entry is stored only if the stamp did not change
    while its key was read, so a revocation committed meanwhile is never cached over. Should a
    revoking process die between its commit and the stamp, entries still expire after
    ``ttl_s``. Without a stamp (PostgreSQL, several hosts) every request reads its key.
    Unknown and revoked keys are never cached."""

    def __init__(
        self, stamp: KeyChangeStamp | None, ttl_s: float = 60.0, max_entries: int = 1024
    ) -> None:
        self.stamp = stamp
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._epoch: bytes | None = None
        self.hits = 0
        self.misses = 0

    async def authenticate(
        self, sessionmaker: async_sessionmaker[AsyncSession], presented: str
    ) -> Caller | None:
        if self.stamp is None:
            async with session_scope(sessionmaker) as session:
                return await authenticate(session, presented)
        digest = hash_api_key(presented)
        epoch = self.stamp.read()
        if epoch != self._epoch:
            self._entries.clear()
            self._epoch = epoch
        cached = self._entries.get(digest)
        now = time.monotonic()
        if cached is not None and cached.expires > now:
            self.hits += 1
            return cached.caller
        self.misses += 1
        async with session_scope(sessionmaker) as session:
            caller = await authenticate(session, presented)
        if caller is not None and self.stamp.read() == epoch == self._epoch:
            self._entries[digest] = _Cached(caller, now + self.ttl_s)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return caller


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
            forget_cached_callers(self.session)
        return key


def forget_cached_callers(session: AsyncSession) -> None:
    """After this commit, every worker's CallerCache drops its entries (a revoked key, a
    tenant's changed setting)."""
    url = session.get_bind().engine.url
    stamp = KeyChangeStamp.for_database(url.render_as_string(hide_password=True))
    if stamp is not None:
        after_commit(session, stamp.bump)
