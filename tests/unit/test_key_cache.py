"""The per-worker API-key cache: a known key costs no query, and a revocation reaches every
worker's cache at its next request (two caches on one SQLite file stand for two workers;
tests/e2e/test_workers.py checks the same across real worker processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.inference.devices import (
    DEFAULT_MAX_WORKERS,
    WorkerPlan,
    default_workers,
    worker_plan,
)
from facesvc.security.keys import Caller
from facesvc.services import keys as key_service
from facesvc.services.keys import ApiKeyService, CallerCache, KeyChangeStamp
from facesvc.services.tenants import tenant_named_or_new
from tests.support.sql import counted_statements


async def new_key(sessions: async_sessionmaker[AsyncSession]) -> tuple[Caller, str]:
    async with session_scope(sessions) as session:
        tenant = await tenant_named_or_new(session, "acme")
        operator = Caller.operator(tenant.id)
        _, secret = await ApiKeyService(session, operator).create("app", ["verify"])
    return operator, secret


def stamp_of(engine: AsyncEngine) -> KeyChangeStamp:
    stamp = KeyChangeStamp.for_database(engine.url.render_as_string(hide_password=False))
    assert stamp is not None
    return stamp


async def test_a_revocation_reaches_every_workers_cache_at_once(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    operator, secret = await new_key(sessions)
    workers = [CallerCache(stamp_of(engine)), CallerCache(stamp_of(engine))]
    for cache in workers:
        first = await cache.authenticate(sessions, secret)
        assert first is not None
        assert first.scopes == frozenset({"verify"})
    with counted_statements(engine) as statements:
        for cache in workers:
            assert await cache.authenticate(sessions, secret) is not None
    assert statements == [], "a cached key needs no query"
    assert [(c.hits, c.misses) for c in workers] == [(1, 1), (1, 1)]

    async with session_scope(sessions) as session:
        listed = await ApiKeyService(session, operator).list()
        await ApiKeyService(session, operator).revoke(listed[0].id)
    for cache in workers:  # the very next request, in each worker
        assert await cache.authenticate(sessions, secret) is None
    assert await workers[0].authenticate(sessions, "fsk_not-a-key") is None


async def test_a_rolled_back_revocation_changes_nothing(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    operator, secret = await new_key(sessions)
    cache = CallerCache(stamp_of(engine))
    assert await cache.authenticate(sessions, secret) is not None

    async def revoke_then_fail() -> None:
        async with session_scope(sessions) as session:
            listed = await ApiKeyService(session, operator).list()
            await ApiKeyService(session, operator).revoke(listed[0].id)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await revoke_then_fail()
    assert await cache.authenticate(sessions, secret) is not None
    assert cache.hits == 1, "no stamp was written: the entry stayed"


async def test_a_key_read_while_a_revocation_lands_is_not_cached(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stamp changes while the key is being read: what was read may predate the
    revocation, so it answers this request but is not kept."""
    _, secret = await new_key(sessions)
    stamp = stamp_of(engine)
    cache = CallerCache(stamp)
    real = key_service.authenticate

    async def revoked_meanwhile(session: AsyncSession, presented: str) -> Caller | None:
        found = await real(session, presented)
        stamp.bump()
        return found

    monkeypatch.setattr(key_service, "authenticate", revoked_meanwhile)
    assert await cache.authenticate(sessions, secret) is not None
    monkeypatch.setattr(key_service, "authenticate", real)
    assert await cache.authenticate(sessions, secret) is not None
    assert (cache.hits, cache.misses) == (0, 2)


async def test_entries_expire_and_the_cache_is_bounded(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, secret = await new_key(sessions)
    _, other = await new_key(sessions)
    expiring = CallerCache(stamp_of(engine), ttl_s=0.0)
    for _ in range(3):
        assert await expiring.authenticate(sessions, secret) is not None
    assert (expiring.hits, expiring.misses) == (0, 3)
    small = CallerCache(stamp_of(engine), max_entries=1)
    for key in (secret, other, secret):
        assert await small.authenticate(sessions, key) is not None
    assert (small.hits, small.misses) == (0, 3)


def test_only_a_sqlite_file_has_a_stamp() -> None:
    assert KeyChangeStamp.for_database("postgresql+asyncpg://u:p@db/facesvc") is None
    assert KeyChangeStamp.for_database("sqlite+aiosqlite:///:memory:") is None
    found = KeyChangeStamp.for_database("sqlite+aiosqlite:////srv/var/facesvc.db")
    assert found is not None
    assert str(found.path) == "/srv/var/facesvc.db-keys"


def test_every_revocation_writes_a_stamp_never_seen_before(tmp_path: Path) -> None:
    """Inode, size and mtime may repeat within one clock tick; the token may not."""
    stamp = KeyChangeStamp(tmp_path / "facesvc.db-keys")
    assert stamp.read() is None
    seen = set()
    for _ in range(50):
        stamp.bump()
        seen.add(stamp.read())
    assert len(seen) == 50


def test_serve_starts_a_worker_per_core_up_to_a_cap_and_sizes_threads() -> None:
    assert default_workers("cpu", cores=2) == 2
    assert default_workers("cpu", cores=64) == DEFAULT_MAX_WORKERS
    assert default_workers("gpu", cores=64) == 1  # --workers N for N GPUs
    # a process not started by `serve` (FACESVC_WORKERS unset) is alone: every core
    assert worker_plan(0, 0, cores=4) == WorkerPlan(workers=1, threads=4, cores=4)
    assert worker_plan(0, 0, cores=4, default=4) == WorkerPlan(workers=4, threads=1, cores=4)
    assert worker_plan(3, 0, cores=4).threads == 1
    assert worker_plan(2, 3, cores=4).threads == 3  # FACESVC_INFERENCE_THREADS wins
