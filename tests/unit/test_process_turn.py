"""ProcessTurn (facesvc.db.turn) and the group writer that takes it, between processes: turns
alternate while two writers want them (fairness), a process killed holding the turn or the
doorway gives it back, and a worker killed in the middle of a group commit (holding the turn
and SQLite's write lock) neither keeps the other worker out nor leaves anything half-written.

Two ``ProcessTurn`` objects in one process contend exactly like two processes: a flock belongs
to an open file, and each object opens its own. Nothing here depends on the machine's speed:
the tests wait on events and lines, and a wait that should end has a generous bound."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.group_writer import GroupWriter
from facesvc.db.models import DEFAULT_TENANT_ID, LoginAttempts, utcnow
from facesvc.db.turn import ProcessTurn
from facesvc.repositories.attempts import LoginAttemptRepository

SRC = Path(__file__).resolve().parents[2] / "src"


async def test_turns_alternate_while_two_writers_want_them(tmp_path: Path) -> None:
    """Each writer takes the turn again as soon as it gave it back (the worst case for a plain
    lock: the one releasing never sleeps and would keep it): with the doorway they alternate."""
    database = tmp_path / "facesvc.db"
    turns = [ProcessTurn(database, timeout_s=60), ProcessTurn(database, timeout_s=60)]
    order: list[int] = []
    first_in, second_trying, both_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def writer(me: int, rounds: int) -> None:
        for n in range(rounds):
            if me == 1:
                second_trying.set()
            await turns[me].acquire()
            first_in.set()
            order.append(me)
            if n == 0 and me == 0:
                await both_in.wait()  # the other one now waits for this turn
            await asyncio.sleep(0.001)  # the "transaction"
            turns[me].release()

    first = asyncio.create_task(writer(0, 20))
    await first_in.wait()
    second = asyncio.create_task(writer(1, 20))
    await second_trying.wait()  # it ran up to its first wait: it is in the doorway
    assert turns[1].waited == 1
    both_in.set()
    await asyncio.wait_for(asyncio.gather(first, second), 60)
    for turn in turns:
        turn.close()
    # while both want turns, no writer has two in a row
    assert order[:40] == [0, 1] * 20, order


async def test_the_turn_is_free_when_nobody_else_wants_it(tmp_path: Path) -> None:
    turn = ProcessTurn(tmp_path / "facesvc.db", timeout_s=60)
    for _ in range(100):
        async with turn.held():
            pass
    assert turn.waited == 0
    turn.close()


def _holder(database: Path, which: str) -> subprocess.Popen[str]:
    """A process that takes the turn (or waits in the doorway) and says so, then sleeps."""
    script = textwrap.dedent(
        f"""
        import asyncio, fcntl, os, sys, time
        from facesvc.db.turn import ProcessTurn
        turn = ProcessTurn({str(database)!r}, timeout_s=60)
        door, lock = turn._open()
        if {which!r} == "turn":
            asyncio.run(turn.acquire())
        else:
            fcntl.flock(door, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(600)
        """
    )
    return _spawn(script)


def _spawn(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


@pytest.mark.parametrize("which", ["turn", "doorway"])
async def test_a_process_killed_holding_the_turn_gives_it_back(tmp_path: Path, which: str) -> None:
    database = tmp_path / "facesvc.db"
    child = _holder(database, which)
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == "held\n"
        blocked = ProcessTurn(database, timeout_s=0.05)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            await blocked.acquire()  # while it lives, the turn is its
        blocked.close()
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        turn = ProcessTurn(database, timeout_s=30)
        await asyncio.wait_for(turn.acquire(), 30)
        turn.release()
        turn.close()
    finally:
        child.kill()
        child.wait(30)


async def test_a_worker_killed_mid_group_commit_leaves_nothing_behind(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A child process's group writer has written an attempt and waits, inside its transaction
    and its turn (SQLite's write lock held); kill -9. This process's writer then takes the
    turn and commits, and the child's uncommitted write is gone."""
    database = Path(str(make_url(database_url).database))
    theirs, ours = uuid.uuid4(), uuid.uuid4()
    script = textwrap.dedent(
        f"""
        import asyncio, uuid
        from facesvc.db.engine import create_engine, create_sessionmaker
        from facesvc.db.group_writer import GroupWriter
        from facesvc.db.models import DEFAULT_TENANT_ID, utcnow
        from facesvc.db.turn import ProcessTurn
        from facesvc.repositories.attempts import LoginAttemptRepository

        async def main():
            engine = create_engine({database_url!r})
            writer = GroupWriter(
                create_sessionmaker(engine), turn=ProcessTurn({str(database)!r}, timeout_s=60)
            )
            writer.start()

            async def hang(session):
                await LoginAttemptRepository(session).begin_attempt(
                    DEFAULT_TENANT_ID, uuid.UUID({str(theirs)!r}), utcnow()
                )
                await session.flush()
                print("held", flush=True)
                await asyncio.sleep(600)

            await writer.run(hang)

        asyncio.run(main())
        """
    )
    child = _spawn(script)
    writer = GroupWriter(sessions, turn=ProcessTurn(database, timeout_s=60))
    writer.start()
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == "held\n"

        async def count(session: AsyncSession) -> int | None:
            return await LoginAttemptRepository(session).begin_attempt(
                DEFAULT_TENANT_ID, ours, utcnow()
            )

        pending = asyncio.ensure_future(writer.run(count))
        await asyncio.sleep(0.2)
        assert not pending.done()  # waits for the child's turn
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert await asyncio.wait_for(pending, 60) == 1
    finally:
        child.kill()
        child.wait(30)
        await writer.stop()
    async with session_scope(sessions) as session:
        found = dict(
            (await session.execute(select(LoginAttempts.subject_id, LoginAttempts.failures))).all()
        )
    assert found == {ours: 1}  # the killed worker's uncommitted attempt is not there


async def test_a_request_cancelled_mid_commit_keeps_no_turn(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The caller of an operation that is running is cancelled (a client gone): the batch
    still commits, and the turn is free for the next writer, here another process's."""
    database = Path(str(make_url(database_url).database))
    writer = GroupWriter(sessions, turn=ProcessTurn(database, timeout_s=60))
    writer.start()
    started, release = asyncio.Event(), asyncio.Event()
    subject = uuid.uuid4()

    async def slow(session: AsyncSession) -> int | None:
        started.set()
        await release.wait()
        return await LoginAttemptRepository(session).begin_attempt(
            DEFAULT_TENANT_ID, subject, utcnow()
        )

    try:
        caller = asyncio.ensure_future(writer.run(slow))
        await started.wait()
        caller.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        other = ProcessTurn(database, timeout_s=30)  # another worker's turn
        await asyncio.wait_for(other.acquire(), 30)
        other.release()
        other.close()
    finally:
        await writer.stop()
    async with session_scope(sessions) as session:
        failures = await session.scalar(
            select(LoginAttempts.failures).where(LoginAttempts.subject_id == subject)
        )
    assert failures == 1  # started before the cancel: committed with its batch
