"""Group commit: the small writes of many requests in one transaction (issue 24, first step).

SQLite has one write lock. When every verification opens two write transactions of its own
(the attempt counted before comparing, then the audit row and the lockout reset), concurrent
requests queue on that lock in SQLite's busy handler, which sleeps between tries: the p95 of a
verify at concurrency 16 was 1.0 s on 2 cores (bench/results/batch_sizes.json). A
``GroupWriter`` gives each process one writer task instead: requests hand it small write
operations and wait; the task runs every operation that is waiting in one transaction, each
in a SAVEPOINT of its own (one that fails is rolled back alone and fails only its caller), and
commits once. Only then are the callers answered, so "committed before compare" and "an audit
row for every 2xx" hold as before.

Cancellation: a caller that goes away before its operation started leaves it unrun; once
started, an operation finishes with its batch (its result is dropped). Only the writer task
ever holds SQLite's lock, and it never awaits anything but the database while it does, so a
cancelled request cannot keep the lock. A killed process loses its connection and with it the
lock (SQLite releases it with the file's locks).

Not wired into the services yet: the verify path and the job runner keep their own
transactions until the bench shows this pays (see README, issue 24).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import AFTER_COMMIT

log = logging.getLogger(__name__)

T = TypeVar("T")
Operation = Callable[[AsyncSession], Awaitable[Any]]


class WriterStoppedError(RuntimeError):
    """The writer was stopped before this operation could run."""


class GroupWriter:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], max_batch: int = 64) -> None:
        self.sessionmaker = sessionmaker
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # transactions committed
        self.operations = 0  # operations run (committed or rolled back to their savepoint)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-writer")

    async def stop(self) -> None:
        """Finish the batch under way, then fail whatever still waits."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(WriterStoppedError("the writer stopped"))

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
                # shielded: a stop() arriving mid-batch lets the batch commit and answer
                await asyncio.shield(self._commit(batch))

    async def _commit(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        hooks: list[Callable[[], None]] = []
        try:
            async with self.sessionmaker() as session:
                for operation, future in batch:
                    try:
                        async with session.begin_nested():
                            value = await operation(session)
                    except Exception as exc:  # this operation only: its savepoint is undone
                        outcomes.append((future, False, exc))
                    else:
                        outcomes.append((future, True, value))
                    self.operations += 1
                await session.commit()
                hooks = session.info.pop(AFTER_COMMIT, [])
        except Exception as exc:  # the commit (or the session) failed: nothing was written
            log.warning("a group commit of %d operations failed: %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
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
