"""Async engine, session factory and unit-of-work scope.

Nothing here runs at import time: the app's lifespan (or a test) calls
:func:`create_engine` and disposes the engine when done.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.pool import NullPool
from sqlalchemy.util.concurrency import await_, in_greenlet

from facesvc.db.sqlite_driver import OneHopCursor, one_hop_aiosqlite
from facesvc.db.turn import open_lock_file, take_flock

AFTER_COMMIT = "after_commit"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # writers queue on one lock: wait, never fail under load
PING_TIMEOUT_S = 5.0


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# Connections the workers of one server may hold on PostgreSQL together (its default
# max_connections is 100: room is left for the migrations, the CLI and psql).
POSTGRES_CONNECTIONS_PER_SERVER = 80


def create_engine(
    url: str, workers: int = 1, writer_turns: bool = False, one_hop: bool = True
) -> AsyncEngine:
    """The service's engine: SQLite in WAL mode with foreign keys on, or PostgreSQL, whose
    pool is sized so that ``workers`` processes stay within its connection limit.
    ``writer_turns``: SQLite writers take turns (``SQLiteWriterQueue``, experimental).
    ``one_hop``: aiosqlite through ``sqlite_driver`` (a call on the connection's thread per
    statement; the pool's reset makes none where no transaction is open)."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        ensure_sqlite_parent(sa_url)
        # SQLite connections are cheap file handles: room for every request in flight at
        # the concurrency the service takes (writers still queue on SQLite's one lock)
        one_hop = one_hop and sa_url.get_driver_name() == "aiosqlite"
        engine = create_async_engine(
            sa_url,
            pool_size=10,
            max_overflow=54,
            module=one_hop_aiosqlite() if one_hop else None,
        )
        _configure_sqlite(engine, foreign_keys=True, writer_turns=writer_turns)
        return engine
    share = POSTGRES_CONNECTIONS_PER_SERVER // max(1, workers)
    return create_async_engine(
        sa_url,
        pool_pre_ping=True,
        pool_size=max(2, min(5, share // 2)),
        max_overflow=max(2, min(10, share - min(5, share // 2))),
    )


def create_migration_engine(url: str) -> AsyncEngine:
    """A single-use engine for Alembic.

    On SQLite, foreign keys stay OFF: batch migrations rebuild a table by copying it
    and dropping the original, and with enforcement on, dropping ``users`` would
    cascade-delete every face. The connections still get explicit BEGINs (IMMEDIATE
    from the first DDL statement on), so the DDL of a migration is transactional.
    """
    sa_url = make_url(url)
    engine = create_async_engine(sa_url, poolclass=NullPool)
    if sa_url.get_backend_name() == "sqlite":
        ensure_sqlite_parent(sa_url)
        _configure_sqlite(engine, foreign_keys=False)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit without a lazy
    # refresh, which an async session cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> bool:
    """True when a ``SELECT 1`` round-trip succeeds within :data:`PING_TIMEOUT_S`."""
    try:
        # Bounded, so a health check answers even when the server hangs.
        async with asyncio.timeout(PING_TIMEOUT_S), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # a health check reports failure, whatever its cause
        return False
    return True


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session that commits if the block succeeds and rolls back if it raises.

    Callables appended to ``session.info["after_commit"]`` run once the commit succeeded
    (e.g. applying a change to an in-memory index); after a rollback they are dropped.
    """
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            session.info.pop(AFTER_COMMIT, None)
            await session.rollback()
            raise
        await session.commit()
        for hook in session.info.pop(AFTER_COMMIT, []):
            hook()


_BACKGROUND: set[asyncio.Task[None]] = set()


def erase_deleted_after_commit(session: AsyncSession) -> None:
    """After this commit, checkpoint and truncate SQLite's WAL so the pre-delete copies of
    the deleted rows' pages (kept in WAL frames) are gone from disk as well.

    PostgreSQL keeps dead tuples until VACUUM; see README (Security) for erasure there."""
    bind = session.bind
    url = bind.engine.url if bind is not None else None
    if url is None or url.get_backend_name() != "sqlite" or not url.database:
        return
    path = url.database

    def checkpoint() -> None:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()

    def spawn() -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(checkpoint))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    after_commit(session, spawn)


# session.info[WROTE]: this session's transaction has written (set by the events below,
# cleared when the transaction ends)
WROTE = "facesvc_wrote"


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    session.info[WROTE] = True


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[WROTE] = True


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _ended(session: Session) -> None:
    session.info.pop(WROTE, None)


def has_written(session: AsyncSession) -> bool:
    """Whether ``session``'s transaction has written (or holds unflushed changes): a write
    handed to another transaction now (the group writer) would wait on this one's lock on
    SQLite, and would not see its rows on PostgreSQL."""
    return bool(session.info.get(WROTE)) or bool(session.new or session.dirty or session.deleted)


def after_commit(session: AsyncSession, hook: Callable[[], None]) -> None:
    """Run ``hook`` after ``session_scope`` commits this session (never on rollback)."""
    session.info.setdefault(AFTER_COMMIT, []).append(hook)


def ensure_sqlite_parent(url: str | URL) -> None:
    """Create the folder of a SQLite database file (SQLite creates the file, not folders)."""
    sa_url = make_url(url)
    database = sa_url.database
    if (
        not database
        or database == ":memory:"
        or database.startswith("file:")
        or sa_url.query.get("uri")
    ):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The resolved path of a SQLite database file; None for PostgreSQL, an in-memory database
    or a ``file:`` URI (the files that locks and turns are put beside)."""
    sa_url = make_url(url)
    database = sa_url.database
    if not is_sqlite(sa_url) or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database).resolve()


class SQLiteWriterQueue:
    """Write transactions take SQLite's write lock in turn: in this process in FIFO order on
    an asyncio lock, between processes (workers) on an advisory ``flock`` beside the database
    polled every millisecond or two, rather than in SQLite's busy handler.

    SQLite's busy handler sleeps between retries, longer and longer (1, 2, 5 ... 100 ms), so
    under concurrent writers a BEGIN IMMEDIATE that could have had the lock a millisecond
    later sleeps tens or hundreds of milliseconds: at 8 concurrent verifications (each writes
    twice) it was 4 ms at the median but 180 ms at p95 and 736 ms at p99 (3.3 s at worst).
    Taking turns here, a writer starts within a couple of milliseconds of the one before it
    committing. Other writers (migrations, the CLI) still meet in the busy handler; a process
    that dies holding the flock loses it with its file descriptors. The wait is bounded like
    the busy timeout; past it, SQLite's own error: "database is locked".
    Experimental, off by default (FACESVC_SQLITE_WRITER_TURNS): a writer whose task is
    cancelled mid-transaction (the job runner stopping) could keep its turn until the
    timeout, which held the job hand-back on shutdown for up to a minute in tests."""

    def __init__(self, lock_path: Path | None, timeout_s: float) -> None:
        self.lock_path = lock_path
        self.timeout_s = timeout_s
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self.holder: Any = None  # the DBAPI connection whose transaction has the turn
        self.waited = 0  # write transactions that had to wait for another one

    def acquire(self) -> bool:
        """Take the turn (inside SQLAlchemy's greenlet); False outside one (sync use)."""
        if not in_greenlet():
            return False
        await_(self._acquire())
        return True

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lock is None or (self._loop is not loop and not self._lock.locked()):
            self._lock, self._loop = asyncio.Lock(), loop  # one per event loop (CLI runs)
        lock = self._lock
        if lock.locked():
            self.waited += 1
        deadline = time.monotonic() + self.timeout_s
        try:
            await asyncio.wait_for(lock.acquire(), self.timeout_s)
        except TimeoutError as exc:
            raise self._locked() from exc
        try:
            await self._flock(deadline)
        except BaseException:
            lock.release()
            raise

    async def _flock(self, deadline: float) -> None:
        if self.lock_path is None:
            return
        if self._fd is None:
            self._fd = open_lock_file(self.lock_path)
        await take_flock(
            self._fd, deadline, f"{self.timeout_s:.0f} s for the other writers", self._waiting
        )

    def _waiting(self) -> None:
        self.waited += 1

    def _locked(self) -> sqlite3.OperationalError:
        return sqlite3.OperationalError(
            f"database is locked (waited {self.timeout_s:.0f} s for the other writers)"
        )

    def release(self) -> None:
        self.holder = None
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop and not loop.is_closed():
            # a connection cleaned up by the garbage collector, on any thread
            loop.call_soon_threadsafe(self._release_now)
        else:
            self._release_now()

    def _release_now(self) -> None:
        if self._lock is None or not self._lock.locked():
            return
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def release_if_held_by(self, dbapi_connection: Any) -> None:
        if dbapi_connection is not None and dbapi_connection is self.holder:
            self.release()


_WRITER_QUEUES: weakref.WeakKeyDictionary[Any, SQLiteWriterQueue] = weakref.WeakKeyDictionary()


def sqlite_writer_queue(engine: AsyncEngine) -> SQLiteWriterQueue | None:
    """The writer queue of a SQLite engine (None for PostgreSQL)."""
    return _WRITER_QUEUES.get(engine.sync_engine)


def _configure_sqlite(
    engine: AsyncEngine, *, foreign_keys: bool, writer_turns: bool = False
) -> None:
    sync_engine = engine.sync_engine
    file = sqlite_file(engine.url)
    lock_path = Path(str(file) + "-writer.lock") if file is not None else None
    writers = SQLiteWriterQueue(lock_path, SQLITE_BUSY_TIMEOUT_MS / 1000)
    _WRITER_QUEUES[sync_engine] = writers

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 driver from managing transactions itself: its legacy mode
        # emits no BEGIN before SAVEPOINT or DDL, so a released savepoint would commit
        # on its own. SQLAlchemy's transactions are mapped onto SQLite's by the
        # listeners below instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            # In WAL mode a commit survives a crash of the process (kill -9); only a power
            # loss may undo the last commits.
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows (a person's erased faces) are overwritten with zeros, not left
            # in free pages; erase_deleted_after_commit() clears them from the WAL too.
            cursor.execute("PRAGMA secure_delete=ON")
        finally:
            cursor.close()

    # SQLite's own BEGIN is emitted lazily, once the first statement shows what the
    # transaction does (see _sqlite_begin_for).
    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.info[_SQLITE_TXN] = _PENDING

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before_execute(
        conn: Connection,
        cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        state = conn.info.get(_SQLITE_TXN)
        if state is None or state == _WRITING:
            return
        begins = list(_sqlite_begin_for(state, statement))
        if "BEGIN IMMEDIATE" in begins and writer_turns:
            # End the read transaction before waiting for the turn: a task cancelled while
            # it waits must not leave an open read snapshot behind, which would hold up the
            # WAL checkpoint (and with it every writer) until the connection is collected.
            while begins[0] != "BEGIN IMMEDIATE":
                cursor.execute(begins.pop(0))
            if writers.acquire():
                writers.holder = conn.connection.dbapi_connection
        try:
            if isinstance(cursor, OneHopCursor) and not writer_turns:
                for sql in begins:  # in the statement's own call on the connection's thread
                    cursor.run_first(sql)
            else:
                for sql in begins:
                    cursor.execute(sql)
        except BaseException:
            writers.release_if_held_by(conn.connection.dbapi_connection)
            raise
        conn.info[_SQLITE_TXN] = _READING if is_read_only_sql(statement) else _WRITING

    @event.listens_for(sync_engine, "commit")
    @event.listens_for(sync_engine, "rollback")
    def _on_end(conn: Connection) -> None:
        # On an invalidated connection this raises (PendingRollbackError), and must: the
        # session then closes the connection for good, releasing SQLite's lock; returning
        # quietly here left a cancelled job batch's lock held past the busy timeout (seen
        # as the shutdown hand-back failing in 1 of 6 runs). Its writer turn, if any, is
        # given back by the pool's invalidate event below.
        conn.info.pop(_SQLITE_TXN, None)
        # "commit" fires just before the DBAPI commit: the next writer's BEGIN IMMEDIATE may
        # meet this COMMIT in SQLite's busy handler, a millisecond, not a queue of writers.
        writers.release_if_held_by(conn.connection.dbapi_connection)

    # A connection closed or invalidated mid-transaction never commits nor rolls back.
    @event.listens_for(sync_engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        writers.release_if_held_by(dbapi_connection)

    @event.listens_for(sync_engine.pool, "invalidate")
    @event.listens_for(sync_engine.pool, "soft_invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        writers.release_if_held_by(dbapi_connection)

    @event.listens_for(sync_engine.pool, "detach")
    def _on_detach(dbapi_connection: Any, _record: Any) -> None:
        writers.release_if_held_by(dbapi_connection)

    @event.listens_for(sync_engine.pool, "close_detached")
    def _on_close_detached(dbapi_connection: Any) -> None:
        writers.release_if_held_by(dbapi_connection)


# Where a connection's SQLite transaction stands (Connection.info[_SQLITE_TXN]).
_SQLITE_TXN = "facesvc_sqlite_txn"
_PENDING = "pending"  # SQLAlchemy began a transaction; SQLite has not been told yet
_READING = "reading"  # BEGIN (deferred): a read snapshot, no lock on writers
_WRITING = "writing"  # BEGIN IMMEDIATE: holds SQLite's single write lock until the end

_READ_ONLY_VERBS = frozenset({"SELECT", "PRAGMA", "EXPLAIN", "VALUES"})


def is_read_only_sql(statement: str) -> bool:
    """Whether a statement only reads (``WITH`` may prefix a write, so it counts as one)."""
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    return bool(words) and words[0].upper() in _READ_ONLY_VERBS


def _sqlite_begin_for(state: str, statement: str) -> tuple[str, ...]:
    """The SQL that opens the right SQLite transaction before ``statement``.

    A transaction that writes starts with ``BEGIN IMMEDIATE``: it takes the write lock
    first, waiting up to ``busy_timeout`` for it. A deferred transaction that has read
    and then writes would instead fail at once with "database is locked" whenever another
    connection committed since its read (SQLITE_BUSY_SNAPSHOT): waiting cannot help it.

    A transaction whose first statement reads begins deferred, so reads keep one snapshot
    and never queue behind writers. If it later writes, the read transaction (which has
    changed nothing) is ended and the write one begins IMMEDIATE: the reads before the
    first write then behave as under PostgreSQL's READ COMMITTED, which this code
    supports anyway, while the writes and every read after them are serialised.
    """
    if is_read_only_sql(statement):
        return ("BEGIN",) if state == _PENDING else ()
    if state == _READING:
        return ("ROLLBACK", "BEGIN IMMEDIATE")
    return ("BEGIN IMMEDIATE",)
