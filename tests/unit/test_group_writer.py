"""GroupWriter (facesvc.db.group_writer) on a real migrated SQLite file: a burst of writers
commits in few transactions and nothing is lost; a failing operation fails alone; a caller
cancelled before its operation ran leaves nothing written; callers are answered only after
the commit; stopping fails what still waits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.group_writer import GroupWriter, WriterStoppedError
from facesvc.db.models import DEFAULT_TENANT_ID, utcnow
from facesvc.repositories.attempts import LoginAttemptRepository


def count(subject: uuid.UUID):  # type: ignore[no-untyped-def]
    async def op(session: AsyncSession) -> int | None:
        return await LoginAttemptRepository(session).begin_attempt(
            DEFAULT_TENANT_ID, subject, utcnow()
        )

    return op


async def attempts(sessions: async_sessionmaker[AsyncSession], subject: uuid.UUID) -> int:
    from facesvc.db.models import LoginAttempts

    async with session_scope(sessions) as session:
        found = await session.scalar(
            select(LoginAttempts.failures).where(LoginAttempts.subject_id == subject)
        )
    return int(found or 0)


async def test_a_burst_of_200_writers_commits_together_and_loses_nothing(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    commits = 0

    def committed(_conn: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(engine.sync_engine, "commit", committed)
    writer = GroupWriter(sessions)
    writer.start()
    try:
        subjects = [uuid.uuid4() for _ in range(20)]
        results = await asyncio.gather(*(writer.run(count(subjects[i % 20])) for i in range(200)))
    finally:
        await writer.stop()
        event.remove(engine.sync_engine, "commit", committed)
    assert sorted(results) == sorted(n for _ in range(20) for n in range(1, 11))
    for subject in subjects:
        assert await attempts(sessions, subject) == 10
    assert writer.operations == 200
    assert writer.batches < 20  # one transaction per batch, not per writer
    assert commits == writer.batches


async def test_a_failing_operation_fails_alone(sessions: async_sessionmaker[AsyncSession]) -> None:
    writer = GroupWriter(sessions)
    writer.start()
    good, bad_subject = uuid.uuid4(), uuid.uuid4()

    async def fails_after_writing(session: AsyncSession) -> None:
        await count(bad_subject)(session)  # written, then undone with its savepoint
        raise ValueError("this request's own error")

    try:
        results = await asyncio.gather(
            writer.run(count(good)),
            writer.run(fails_after_writing),
            writer.run(count(good)),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert results[0] == 1
    assert isinstance(results[1], ValueError)
    assert results[2] == 2
    assert await attempts(sessions, good) == 2
    assert await attempts(sessions, bad_subject) == 0


async def test_answers_come_after_the_commit(sessions: async_sessionmaker[AsyncSession]) -> None:
    """What a caller is told is already visible to every other connection."""
    writer = GroupWriter(sessions)
    writer.start()
    subject = uuid.uuid4()
    try:
        assert await writer.run(count(subject)) == 1
        assert await attempts(sessions, subject) == 1  # another session sees it at once
    finally:
        await writer.stop()


async def test_a_caller_cancelled_before_its_turn_writes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writer = GroupWriter(sessions)
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(session: AsyncSession) -> None:
        started.set()
        await release.wait()

    writer.start()
    subject = uuid.uuid4()
    try:
        first = asyncio.ensure_future(writer.run(slow))
        await started.wait()  # the writer is inside a batch: the next one waits
        waiting = asyncio.ensure_future(writer.run(count(subject)))
        await asyncio.sleep(0)
        waiting.cancel()
        release.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await writer.run(count(uuid.uuid4())) == 1  # the writer goes on
    finally:
        await writer.stop()
    assert await attempts(sessions, subject) == 0


async def test_stop_finishes_the_batch_and_fails_the_rest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writer = GroupWriter(sessions)
    release = asyncio.Event()
    started = asyncio.Event()
    subject = uuid.uuid4()

    async def slow(session: AsyncSession) -> int | None:
        started.set()
        await release.wait()
        return await count(subject)(session)

    writer.start()
    running = asyncio.ensure_future(writer.run(slow))
    await started.wait()
    queued = asyncio.ensure_future(writer.run(count(uuid.uuid4())))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(writer.stop())
    await asyncio.sleep(0)
    release.set()
    await stopping
    assert await running == 1  # the batch under way committed and answered
    with pytest.raises(WriterStoppedError):
        await queued
    with pytest.raises(WriterStoppedError):
        await writer.run(count(uuid.uuid4()))
    assert await attempts(sessions, subject) == 1


async def test_an_empty_table_count_is_a_read_too(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A read-only operation in a batch is fine (nothing to write, still answered)."""
    from facesvc.db.models import LoginAttempts

    writer = GroupWriter(sessions)
    writer.start()
    try:

        async def read(session: AsyncSession) -> int:
            return int(await session.scalar(select(func.count()).select_from(LoginAttempts)) or 0)

        assert await writer.run(read) == 0
    finally:
        await writer.stop()


async def test_a_failing_operation_s_after_commit_hooks_are_dropped_with_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A hook (e.g. a gallery change applied in memory) registered by an operation that then
    failed must not run: its writes were undone. The others' hooks run once, after commit."""
    from facesvc.db.engine import after_commit

    ran: list[str] = []
    writer = GroupWriter(sessions)
    writer.start()

    def hooked(name: str, fail: bool):  # type: ignore[no-untyped-def]
        async def op(session: AsyncSession) -> None:
            await count(uuid.uuid4())(session)
            after_commit(session, lambda: ran.append(name))
            if fail:
                raise ValueError(name)

        return op

    try:
        results = await asyncio.gather(
            writer.run(hooked("first", False)),
            writer.run(hooked("failed", True)),
            writer.run(hooked("last", False)),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert isinstance(results[1], ValueError)
    assert sorted(ran) == ["first", "last"]
