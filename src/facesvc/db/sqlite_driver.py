"""SQLAlchemy's aiosqlite driver with one thread hop per statement (issue 24).

aiosqlite runs each SQLite call on the connection's own thread and hands the answer back to
the event loop: a "hop" (a queue put, the thread waking, ``call_soon_threadsafe``, the loop's
self-pipe, a greenlet switch). SQLAlchemy's adapter makes four per statement (open a cursor,
execute, fetch, close), and the service's SQLite BEGIN (engine.py) a fifth: a verification's
read cost 7 hops and ~1.2 ms of CPU, and the event loop spent 6.6 ms per verify at 16
concurrent, a third of it in these. Here a statement is one call on the connection's thread
(``_run``: cursor, the BEGIN the statement needs, execute, fetch every row, close), which is
what the adapter did anyway, since it always fetched every row at once.

Only the ordinary cursor changes: server-side cursors, connecting, committing and the
exceptions are SQLAlchemy's own. It reaches into aiosqlite for ``Connection._execute`` (run a
function on the connection's thread) and ``_conn``, as SQLAlchemy's adapter itself does for
``isolation_level``; ``tests/unit/test_sqlite_driver.py`` counts the hops, so an aiosqlite
release that moves them fails there.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

_Outcome = tuple[Any, Sequence[Any], int, int | None]  # description, rows, rowcount, lastrowid


def _run(
    connection: sqlite3.Connection,
    first: Sequence[str],
    operation: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    """On the connection's thread: ``first`` (a BEGIN), then the statement, every row."""
    cursor = connection.cursor()
    try:
        for sql in first:
            cursor.execute(sql)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A statement and its rows in one call on the connection's thread; no SQLite cursor
    is held between calls (closing is free)."""

    __slots__ = ("_description", "_first", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # the base opens an aiosqlite cursor here (a hop); this one opens it in ``_run``
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows: collections.deque[Any] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._first: list[str] = []

    def run_first(self, sql: str) -> None:
        """Run ``sql`` (e.g. the BEGIN a statement needs) just before the next statement,
        in the same call."""
        self._first.append(sql)

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        return None

    async def _async_soft_close(self) -> None:
        return None  # every row is already here

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._call(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._call(operation, seq_of_parameters, many=True)

    async def _call(self, operation: Any, parameters: Any, many: bool) -> None:
        first, self._first = self._first, []
        async with self._adapt_connection._execute_mutex:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, first, operation, parameters, many
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor  # type: ignore[assignment]  # a subclass of the base's

    def commit(self) -> None:
        # no call on the connection's thread when SQLite has no transaction open (sqlite3's
        # commit and rollback do nothing there): a session that ran no statement, and the
        # pool's rollback of every connection returned after a commit
        if self._open_transaction():
            super().commit()

    def rollback(self) -> None:
        if self._open_transaction():
            super().rollback()

    def _open_transaction(self) -> bool:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        return connection._connection is not None and connection.in_transaction


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*args, **kwargs)
        return _OneHopConnection(self, adapted._connection)


def one_hop_aiosqlite() -> Any:
    """The DBAPI module for ``create_async_engine(..., module=...)`` on sqlite+aiosqlite."""
    return _OneHopDBAPI(aiosqlite, sqlite3)
