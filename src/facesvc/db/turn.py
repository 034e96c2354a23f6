"""A fair turn between the processes (workers) that write one SQLite file.

SQLite's busy handler makes a writer that finds the write lock taken sleep (1, 2, 5 ... 100
ms between tries): a lock free a millisecond later is taken tens of milliseconds later, and
a process that commits and begins again at once can keep it from another for seconds. The
group writer of each process (``group_writer.py``) therefore takes a ``ProcessTurn`` around
its transaction instead, made of two advisory ``flock`` s beside the database:

- the *turn* (``<db>-turn.lock``), held from the transaction's BEGIN to its COMMIT;
- the *doorway* (``<db>-turn.door``), held by whoever waits for the turn, and given up once
  the turn is taken. The holder of the turn must pass the doorway to take it again, so while
  another process waits, no process takes the turn twice in a row: between two processes
  turns alternate under load (fairness), whatever their speed.

A process that dies holding either (kill -9) loses it with its file descriptors: the kernel
gives it back. Only a group writer's task takes a turn and it never awaits anything but the
database while holding it, so a cancelled request never keeps one. Waiting polls every 0.5 to
2 ms and is bounded; past the bound, SQLite's own error ("database is locked").
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

POLL_S = (0.0005, 0.001, 0.002)  # between tries of a flock, then every 2 ms


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts as alive: not ours to reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_lock_file(path: Path) -> int:
    """A descriptor to ``flock``: read-only is enough, and the file is made readable by all,
    so one made by another user (the CLI run as root) never locks the service out."""
    return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)


async def take_flock(
    fd: int, deadline: float, what: str, on_wait: Callable[[], None] | None = None
) -> None:
    """Take an exclusive ``flock`` on ``fd``, polling (0.5, 1, then every 2 ms) until
    ``deadline`` (time.monotonic()); past it, SQLite's own error ("database is locked
    (waited <what>)"). ``on_wait`` is called once, when the first try finds it taken."""
    tries = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if tries == 0 and on_wait is not None:
                on_wait()
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"database is locked (waited {what})") from None
            await asyncio.sleep(POLL_S[min(tries, len(POLL_S) - 1)])
            tries += 1


def try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` if it is free now."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class ProcessTurn:
    def __init__(self, database: Path, timeout_s: float) -> None:
        base = str(Path(database).resolve())
        self.paths = (Path(base + "-turn.door"), Path(base + "-turn.lock"))
        self.timeout_s = timeout_s
        self._fds: tuple[int, int] | None = None
        self.waited = 0  # turns that had to wait for another process

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            door, turn = (open_lock_file(p) for p in self.paths)
            self._fds = (door, turn)
        return self._fds

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        door, turn = self._open()
        if try_flock(turn):
            # free at once: nobody waits in the doorway either, or they would hold it
            if try_flock(door):
                fcntl.flock(door, fcntl.LOCK_UN)
                return
            fcntl.flock(turn, fcntl.LOCK_UN)  # someone waits: after them
        self.waited += 1
        deadline = time.monotonic() + self.timeout_s
        what = f"{self.timeout_s:.0f} s for the other workers' writes"
        await take_flock(door, deadline, what)
        try:
            await take_flock(turn, deadline, what)
        finally:
            fcntl.flock(door, fcntl.LOCK_UN)

    def release(self) -> None:
        if self._fds is not None:
            fcntl.flock(self._fds[1], fcntl.LOCK_UN)

    def close(self) -> None:
        fds, self._fds = self._fds, None
        if fds is not None:
            for fd in fds:
                os.close(fd)
