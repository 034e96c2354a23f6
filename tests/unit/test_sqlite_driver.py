"""The service's SQLite driver (db/sqlite_driver.py, on by create_engine): a statement is one
call on the connection's thread, a transaction's SQLite BEGIN rides with its first statement,
the pool's reset makes no call after a commit; and the results and errors are SQLAlchemy's as
before: rows, rowcount, lastrowid, executemany, RETURNING, integrity errors, and a transaction
left open (a session closed without commit) rolled back before the connection is reused."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import create_engine, create_sessionmaker, session_scope
from facesvc.db.sqlite_driver import OneHopCursor


@pytest.fixture(params=[True, False], ids=["one-hop", "adapter"])
def one_hop(request: pytest.FixtureRequest) -> bool:
    """The service's engine, and with FACESVC_SQLITE_ONE_HOP=false (SQLAlchemy's adapter):
    the results must be the same."""
    return bool(request.param)


@pytest.fixture
async def engine(tmp_path: Path, one_hop: bool) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}", one_hop=one_hop)
    async with session_scope(create_sessionmaker(engine)) as session:
        await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Calls made on the connections' threads, by the function run there."""
    counted: Counter[str] = Counter()
    run = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counted[getattr(fn, "__name__", repr(fn))] += 1
        return await run(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted


@pytest.mark.parametrize("one_hop", [True], ids=["one-hop"])
async def test_a_read_transaction_is_two_calls_on_the_connections_thread(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, calls: Counter[str]
) -> None:
    async with engine.connect() as connection:  # the engine's connections run this cursor
        raw = await connection.get_raw_connection()
        assert isinstance(raw.dbapi_connection.cursor(), OneHopCursor)  # type: ignore[union-attr]
    async with session_scope(sessionmaker) as session:  # a pooled connection, warm
        await session.execute(text("SELECT 1"))
    calls.clear()
    async with session_scope(sessionmaker) as session:
        rows = (await session.execute(text("SELECT name FROM t"))).all()
    assert rows == []
    # BEGIN + SELECT + fetch in one call, then COMMIT; SQLAlchemy's adapter made seven
    # (cursor, BEGIN, SELECT, fetch, close, COMMIT, the pool's ROLLBACK)
    assert sum(calls.values()) == 2, calls
    calls.clear()
    async with session_scope(sessionmaker):
        pass  # nothing ran: no transaction to commit, no call
    assert sum(calls.values()) == 0, calls


async def test_results_are_what_sqlalchemy_gave(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    async with session_scope(sessionmaker) as session:
        inserted = await session.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert inserted.lastrowid == 1  # type: ignore[attr-defined]
        many = await session.execute(
            text("INSERT INTO t (name) VALUES (:name)"), [{"name": "b"}, {"name": "c"}]
        )
        assert many.rowcount == 2  # type: ignore[attr-defined]
        updated = await session.execute(text("UPDATE t SET name = name || '!' WHERE id > 1"))
        assert updated.rowcount == 2  # type: ignore[attr-defined]
        returned = await session.execute(
            text("INSERT INTO t (name) VALUES ('d') RETURNING id, name")
        )
        assert returned.all() == [(4, "d")]
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT id, name FROM t ORDER BY id"))
        assert list(result.keys()) == ["id", "name"]
        assert result.all() == [(1, "a"), (2, "b!"), (3, "c!"), (4, "d")]
        streamed = await connection.stream(text("SELECT name FROM t ORDER BY id"))
        assert [row[0] async for row in streamed] == ["a", "b!", "c!", "d"]  # server side


async def test_an_error_fails_its_statement_and_the_transaction_rolls_back(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async def twice() -> None:
        async with session_scope(sessionmaker) as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('x')"))
            await session.execute(text("INSERT INTO t (name) VALUES ('x')"))

    with pytest.raises(IntegrityError):
        await twice()
    async with session_scope(sessionmaker) as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    """A connection that comes back to the pool inside a transaction SQLAlchemy does not know
    of (as one whose request was cancelled mid-statement can) still holds SQLite's write
    lock: the pool's reset must roll it back, or every later writer waits out the busy
    timeout. A session closed without commit rolls back by itself."""
    session = sessionmaker()
    await session.execute(text("INSERT INTO t (name) VALUES ('closed without commit')"))
    await session.close()
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert isinstance(raw, aiosqlite.Connection)
        await raw.execute("BEGIN IMMEDIATE")
        await raw.execute("INSERT INTO t (name) VALUES ('left open')")
        assert raw.in_transaction
    async with asyncio.timeout(10):  # far under the 30 s busy timeout a held lock would cost
        async with session_scope(sessionmaker) as other:
            await other.execute(text("INSERT INTO t (name) VALUES ('next')"))
    async with session_scope(sessionmaker) as reader:
        names = (await reader.execute(text("SELECT name FROM t"))).scalars().all()
    assert names == ["next"]
