"""Small writes of many requests: one group-commit writer per process on SQLite, a
transaction each on PostgreSQL (issue 24).

SQLite has one write lock. When every verification opens write transactions of its own (the
attempt counted before comparing, then the audit row and the lockout reset), concurrent
requests queue on that lock in SQLite's busy handler, which sleeps between tries: the p95 of a
verify at concurrency 16 was 0.8-1.2 s on 2 cores. A ``GroupWriter`` gives each process one
writer task instead: requests hand it small write operations and wait; the task runs every
operation that is waiting in one transaction and commits once; should one fail, the batch is
rolled back and run again with each operation in a SAVEPOINT of its own, so the one that fails
is undone alone and fails only its caller. Only then are the callers
answered, so "committed before compare" and "an audit row for every 2xx" hold as before, and
nothing acknowledged is lost on kill -9 (WAL, synchronous=NORMAL). Between the processes of
one server the writers take a fair turn (``ProcessTurn``) around each transaction.

Cancellation: a caller that goes away before its operation started leaves it unrun; once
started, an operation finishes with its batch (its result is dropped). Only the writer task
ever holds the turn and SQLite's lock, and it is never cancelled mid-batch (``stop()`` lets
the batch under way commit), so a cancelled request cannot keep either. A killed process
loses its connection, flocks and with them the lock.

PostgreSQL has row locks and no single write lock: ``DirectWriter`` runs each operation in a
transaction of its own (the path it always had).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import AFTER_COMMIT, session_scope
from facesvc.db.turn import ProcessTurn

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[AsyncSession], Awaitable[Any]]


class WriterStoppedError(RuntimeError):
    """The writer was stopped before this operation could run."""


class Writer(Protocol):
    """Runs a small write operation and answers once it is committed."""

    # whether writes are grouped into shared transactions (worth handing over a write a
    # request could make in its own transaction)
    groups: bool

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run(self, operation: Callable[[AsyncSession], Awaitable[T]]) -> T: ...


class DirectWriter:
    """Each operation in a transaction of its own (PostgreSQL; SQLite with group commit off)."""

    groups = False

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def run(self, operation: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with session_scope(self.sessionmaker) as session:
            return await operation(session)


class GroupWriter:
    groups = True

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        max_batch: int = 64,
        turn: ProcessTurn | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.max_batch = max_batch
        self.turn = turn
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._batch: asyncio.Task[None] | None = None  # the transaction under way
        self.batches = 0  # transactions committed
        self.operations = 0  # operations run (committed or rolled back to their savepoint)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-writer")

    async def stop(self) -> None:
        """Let the batch under way commit and answer, then fail whatever still waits."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._batch is not None:
            await asyncio.gather(self._batch, return_exceptions=True)
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(WriterStoppedError("the writer stopped"))
        if self.turn is not None:
            self.turn.close()

    async def run(self, operation: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``operation`` in the next batch; its result once the batch has committed."""
        if self._task is None or self._task.done():
            raise WriterStoppedError("the writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((operation, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(op, future) for op, future in batch if not future.done()]
            if batch:
                # a task of its own, shielded: a stop() arriving mid-batch lets it commit
                self._batch = asyncio.create_task(self._commit(batch), name="group-commit")
                await asyncio.shield(self._batch)
                self._batch = None

    async def _commit(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        try:
            async with self._turn():
                done = await self._transaction(batch, isolated=False)
                if done is None:  # one failed: again, each in a savepoint, so it fails alone
                    done = await self._transaction(batch, isolated=True)
                if done is None:  # an isolated run never gives up
                    raise RuntimeError("the isolated group commit gave up")
        except Exception as exc:  # the turn, the commit or the session failed: nothing written
            log.warning("a group commit of %d operations failed: %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        outcomes, hooks = done
        self.batches += 1
        self.operations += len(batch)
        for hook in hooks:  # e.g. a gallery change applied to the in-memory index
            try:
                hook()
            except Exception:
                log.exception("an after-commit hook of a group commit failed")
        for future, ok, value in outcomes:
            if future.done():  # its caller went away meanwhile
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def _transaction(
        self, batch: list[tuple[Operation, asyncio.Future[Any]]], isolated: bool
    ) -> tuple[list[tuple[asyncio.Future[Any], bool, Any]], list[Callable[[], None]]] | None:
        """Run the batch in one transaction and commit. Not ``isolated`` (the common case:
        two statements fewer per operation), the first failure rolls everything back and
        returns None; ``isolated``, each operation runs in a SAVEPOINT and a failure undoes
        that operation only."""
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        async with self.sessionmaker() as session:
            hooks: list[Callable[[], None]] = session.info.setdefault(AFTER_COMMIT, [])
            for operation, future in batch:
                mark = len(hooks)
                try:
                    if isolated:
                        async with session.begin_nested():
                            value = await operation(session)
                    else:
                        value = await operation(session)
                except Exception as exc:  # this operation only
                    if not isolated:
                        session.info.pop(AFTER_COMMIT, None)
                        await session.rollback()
                        return None
                    del hooks[mark:]  # its after-commit hooks go with its undone writes
                    outcomes.append((future, False, exc))
                else:
                    outcomes.append((future, True, value))
            await session.commit()
            return outcomes, session.info.pop(AFTER_COMMIT, [])

    def _turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.turn.held() if self.turn is not None else contextlib.nullcontext()
