"""LockoutGuard.attempt (facesvc.services.recognition.lockout), ``async with
lockout.attempt(tenant, id) as session:``, on a real migrated SQLite file, through the group
writer and through a transaction per attempt (the path PostgreSQL takes): the attempt is
committed before the block reads anything; a locked id never enters the block and is not
counted; an error or a cancellation inside the block keeps the count and gives the read's
connection back; a caller cancelled before its count ran counts nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import has_written, session_scope
from facesvc.db.group_writer import DirectWriter, GroupWriter, Writer
from facesvc.db.models import DEFAULT_TENANT_ID, LoginAttempts
from facesvc.errors import LockedOutError
from facesvc.repositories.attempts import LoginAttemptRepository
from facesvc.services.recognition.lockout import LockoutGuard, LockoutPolicy

POLICY = LockoutPolicy(max_failures=3, base_delay_s=30, max_delay_s=3600)
TENANT = DEFAULT_TENANT_ID


@pytest.fixture(params=["group", "direct"])
async def writer(
    request: pytest.FixtureRequest, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Writer]:
    chosen: Writer = GroupWriter(sessions) if request.param == "group" else DirectWriter(sessions)
    chosen.start()
    yield chosen
    await chosen.stop()


async def committed_failures(sessions: async_sessionmaker[AsyncSession], subject: uuid.UUID) -> int:
    """The count as another connection sees it: only what is committed."""
    async with session_scope(sessions) as session:
        found = await session.scalar(
            select(LoginAttempts.failures).where(LoginAttempts.subject_id == subject)
        )
    return int(found or 0)


def checked_out(engine: AsyncEngine) -> int:
    return int(engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_the_attempt_is_committed_before_the_block_reads(
    sessions: async_sessionmaker[AsyncSession], writer: Writer
) -> None:
    guard = LockoutGuard(sessions, writer, POLICY)
    subject = uuid.uuid4()
    for expected in (1, 2):
        async with guard.attempt(TENANT, subject) as session:
            assert await committed_failures(sessions, subject) == expected
            row = await LoginAttemptRepository(session).get(TENANT, subject)
            assert row is not None
            assert row.failures == expected  # the block's own session reads it too
            assert not has_written(session)  # a read transaction: the count is not in it


async def test_a_locked_id_never_enters_the_block_and_is_not_counted(
    sessions: async_sessionmaker[AsyncSession], writer: Writer
) -> None:
    guard = LockoutGuard(sessions, writer, POLICY)
    subject = uuid.uuid4()
    entered = 0
    for _ in range(POLICY.max_failures):  # the third attempt still runs, and sets the lock
        async with guard.attempt(TENANT, subject):
            entered += 1
    with pytest.raises(LockedOutError) as locked:
        async with guard.attempt(TENANT, subject):
            entered += 1
    assert entered == POLICY.max_failures
    assert 25 <= locked.value.retry_after <= 30
    assert await committed_failures(sessions, subject) == POLICY.max_failures


async def test_an_error_in_the_block_keeps_the_count_and_ends_the_read(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], writer: Writer
) -> None:
    guard = LockoutGuard(sessions, writer, POLICY)
    subject = uuid.uuid4()

    async def verify() -> None:
        async with guard.attempt(TENANT, subject) as session:
            await session.execute(select(1))  # the read holds a connection
            raise ValueError("compare failed")

    with pytest.raises(ValueError, match="compare failed"):
        await verify()
    assert await committed_failures(sessions, subject) == 1
    assert checked_out(engine) == 0


async def test_a_cancelled_block_keeps_the_count_and_ends_the_read(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], writer: Writer
) -> None:
    guard = LockoutGuard(sessions, writer, POLICY)
    subject = uuid.uuid4()
    reading = asyncio.Event()

    async def verify() -> None:
        async with guard.attempt(TENANT, subject) as session:
            await session.execute(select(1))
            reading.set()
            await asyncio.Event().wait()  # a client that goes away is cancelled here

    task = asyncio.create_task(verify())
    await reading.wait()
    assert checked_out(engine) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await committed_failures(sessions, subject) == 1
    assert checked_out(engine) == 0
    async with guard.attempt(TENANT, subject):  # nothing is left stuck
        assert await committed_failures(sessions, subject) == 2


async def test_a_caller_cancelled_before_its_count_ran_counts_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writer = GroupWriter(sessions)
    writer.start()
    guard = LockoutGuard(sessions, writer, POLICY)
    subject = uuid.uuid4()
    busy, release = asyncio.Event(), asyncio.Event()

    async def batch_under_way(_session: AsyncSession) -> None:
        busy.set()
        await release.wait()

    entered = False

    async def verify() -> None:
        nonlocal entered
        async with guard.attempt(TENANT, subject):
            entered = True

    try:
        ahead = asyncio.create_task(writer.run(batch_under_way))
        await busy.wait()
        task = asyncio.create_task(verify())
        await asyncio.sleep(0)  # its count waits for the next batch
        task.cancel()
        release.set()
        await ahead
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
        await writer.stop()
    assert not entered
    assert await committed_failures(sessions, subject) == 0
