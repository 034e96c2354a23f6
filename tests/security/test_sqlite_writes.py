"""SQLite under concurrent writers: no "database is locked", nothing lost.

Every enrolment reads the user, runs the models (tens of ms, longer under load), then writes.
With a deferred transaction its read snapshot goes stale as soon as another enrolment commits,
and SQLite refuses the upgrade to a write at once (SQLITE_BUSY_SNAPSHOT, "database is
locked"); write transactions must start with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import (
    create_engine,
    create_sessionmaker,
    is_read_only_sql,
    session_scope,
    sqlite_writer_queue,
)
from facesvc.db.migrate import upgrade_async
from facesvc.db.models import DEFAULT_TENANT_ID, User
from tests.support.data import image_file, lfw_image
from tests.support.gates import eventually

PEOPLE = (
    "Colin_Powell",
    "Laura_Bush",
    "Vladimir_Putin",
    "Junichiro_Koizumi",
    "Tony_Blair",
)
PER_PERSON = 10


async def test_fifty_concurrent_enrolments_are_all_stored(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    users = {}
    for name in PEOPLE:
        response = await client.post("/v1/users", json={"name": name.replace("_", " ")})
        assert response.status_code == 201, response.text
        users[name] = response.json()["id"]
    photo = {name: lfw_image(name, 1) for name in PEOPLE}

    async def enrol(name: str) -> httpx.Response:
        return await client.post(
            f"/v1/users/{users[name]}/faces",
            files=image_file(photo[name]),
            data={"consent": "true"},
        )

    with caplog.at_level(logging.WARNING):
        responses = await asyncio.gather(*(enrol(n) for n in PEOPLE for _ in range(PER_PERSON)))

    statuses = [r.status_code for r in responses]
    assert statuses == [201] * len(PEOPLE) * PER_PERSON, [
        r.text for r in responses if r.status_code != 201
    ]
    assert "database is locked" not in caplog.text
    stored = 0
    for name in PEOPLE:
        listed = await client.get(f"/v1/users/{users[name]}/faces")
        assert listed.status_code == 200, listed.text
        stored += len(listed.json()["items"])
    assert stored == len(PEOPLE) * PER_PERSON


@pytest.fixture
async def sessionmaker(
    tmp_path: Path,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'writes.db'}"
    await upgrade_async(url)
    engine = create_engine(url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def user_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def test_read_then_write_after_another_commit_does_not_fail(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessionmaker) as enrolment:
        assert await user_count(enrolment) == 0  # a read first, as an enrolment does
        async with session_scope(sessionmaker) as other:
            other.add(User(name="committed meanwhile", tenant_id=DEFAULT_TENANT_ID))
        # A deferred transaction would now fail at once (SQLITE_BUSY_SNAPSHOT).
        enrolment.add(User(name="written after reading", tenant_id=DEFAULT_TENANT_ID))
        await enrolment.flush()
        assert await user_count(enrolment) == 2  # reads after the first write see it all
    async with session_scope(sessionmaker) as check:
        assert await user_count(check) == 2


async def test_read_only_session_keeps_one_snapshot(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessionmaker) as reader:
        before = await user_count(reader)
        async with session_scope(sessionmaker) as writer:
            writer.add(User(name="not seen by the open read", tenant_id=DEFAULT_TENANT_ID))
        assert await user_count(reader) == before


async def test_a_writer_waits_for_the_lock_instead_of_failing(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    holding = asyncio.Event()

    async def slow_writer() -> None:
        async with session_scope(sessionmaker) as session:
            session.add(User(name="slow", tenant_id=DEFAULT_TENANT_ID))
            await session.flush()  # BEGIN IMMEDIATE: holds the write lock
            holding.set()
            await asyncio.sleep(0.5)

    async def second_writer() -> None:
        await holding.wait()
        async with session_scope(sessionmaker) as session:
            session.add(User(name="second", tenant_id=DEFAULT_TENANT_ID))
            await session.flush()

    await asyncio.gather(slow_writer(), second_writer())
    async with session_scope(sessionmaker) as check:
        assert await user_count(check) == 2


async def _hold_write_then_add(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str,
    holding: asyncio.Event,
    release: asyncio.Event,
) -> None:
    async with session_scope(sessionmaker) as session:
        session.add(User(name=name, tenant_id=DEFAULT_TENANT_ID))
        await session.flush()  # BEGIN IMMEDIATE: this process's turn and SQLite's lock
        holding.set()
        await release.wait()


async def _add(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> None:
    async with session_scope(sessionmaker) as session:
        session.add(User(name=name, tenant_id=DEFAULT_TENANT_ID))


@pytest.mark.parametrize("processes", [1, 2])
async def test_writers_take_turns_instead_of_sleeping_in_sqlite(
    tmp_path: Path, processes: int
) -> None:
    """A second writer waits for its turn (this process's queue; with two engines, as two
    workers have, the flock beside the database) and starts when the first commits, rather
    than in SQLite's busy handler, whose sleeps grow to 100 ms between tries."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}"
    await upgrade_async(url)
    engines = [create_engine(url, writer_turns=True) for _ in range(processes)]
    first, second = engines[0], engines[-1]
    queue = sqlite_writer_queue(second)
    assert queue is not None
    holding, release = asyncio.Event(), asyncio.Event()
    try:
        holder = asyncio.ensure_future(
            _hold_write_then_add(create_sessionmaker(first), "first", holding, release)
        )
        await holding.wait()
        waiter = asyncio.ensure_future(_add(create_sessionmaker(second), "second"))
        await eventually(lambda: queue.waited == 1, "the second writer waits for its turn")
        assert not waiter.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, waiter), 30)
        async with session_scope(create_sessionmaker(second)) as check:
            assert await user_count(check) == 2
    finally:
        release.set()
        for engine in engines:
            await engine.dispose()


async def test_a_connection_lost_mid_write_gives_its_turn_back(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lost.db'}"
    await upgrade_async(url)
    engine = create_engine(url, writer_turns=True)
    sessionmaker = create_sessionmaker(engine)
    session = sessionmaker()
    session.add(User(name="lost", tenant_id=DEFAULT_TENANT_ID))
    await session.flush()  # holds the turn
    with contextlib.suppress(PendingRollbackError):  # the rollback hook refuses it
        await session.invalidate()  # its connection closed: neither commit nor rollback
    await asyncio.wait_for(_add(sessionmaker, "next"), 10)  # not the 30 s timeout
    async with session_scope(sessionmaker) as check:
        assert await user_count(check) == 1
    await engine.dispose()


@pytest.mark.parametrize(
    ("statement", "read_only"),
    [
        ("SELECT 1", True),
        ("  select * from users", True),
        ("PRAGMA integrity_check", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("INSERT INTO users VALUES (1)", False),
        ("UPDATE gallery_state SET version = version + 1", False),
        ("DELETE FROM faces", False),
        ("SAVEPOINT sa_savepoint_1", False),
        ("CREATE TABLE t (x)", False),
        ("WITH gone AS (SELECT 1) DELETE FROM users", False),
        ("", False),
    ],
)
def test_statement_classification(statement: str, read_only: bool) -> None:
    assert is_read_only_sql(statement) is read_only
