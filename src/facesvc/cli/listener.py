"""The listening socket ``facesvc serve --workers N`` shares between its worker processes, which
hands each new connection to the worker holding the fewest (issue 24).

uvicorn's workers accept from one shared socket greedily: the first to wake takes every
connection waiting (asyncio and libuv both accept until the queue is empty). A client pool
opening 16 keep-alive connections at once got 14 of them on one worker and 2 on the other: the
14 queued behind each other on half the service (mean 236 ms against 82 ms on the other worker),
and verify's p95 at concurrency 16 was 1.53x the queueing mean instead of ~1.3x with an even
split (``bench/results/http_load_balanced.json``).

Here every worker keeps its count of open connections in a slot of a small shared file (the
``ConnectionLedger``), and a worker holding more than another live worker leaves a waiting
connection in the queue for it (``accept`` answers "nothing to accept", which asyncio takes as
an empty queue; the socket stays readable, so the worker tries again on its next loop turn).
Should the emptier worker not take it within ``HOLD_SECONDS`` (busy, hung or dead), the fuller
one accepts after all: balance never costs a client more than that. This is nginx's
``least_conn`` applied to accepting, for one machine's workers; the ledger knows nothing of a
request, only of connections.

The hook is Python's ``socket.accept``, which asyncio's event loop calls and uvloop's (libuv's
own accept) does not: the balanced server runs on asyncio's loop. A worker shutting down frees
its slot when it closes its listener (before it drains its connections); one that is killed
leaves its slot to the next worker started (a dead pid's count is never read).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.reduction import DupFd
from typing import Protocol

from facesvc.db.turn import process_alive

SLOTS = 64  # worker processes one ledger can hold (serve starts at most 8 per machine)
_SLOT_WORDS = 2  # pid, open connections: int64 each
_SIZE = SLOTS * _SLOT_WORDS * 8
HOLD_SECONDS = 0.05  # the longest a connection waits for an emptier worker to take it


class ConnectionLedger:
    """Open connections per worker process: one slot (pid, count) per worker in a shared file
    every worker maps. A worker writes only its own slot; reads of the others may be a moment
    old, which costs at most one connection of balance."""

    def __init__(self, fd: int) -> None:
        """Over ``fd``, an open descriptor of the ledger's file (this object closes it)."""
        self.fd = fd
        self._map = mmap.mmap(fd, _SIZE)
        self._words = memoryview(self._map).cast("q")
        self._slot: int | None = None

    @classmethod
    def create(cls) -> ConnectionLedger:
        """A new, empty ledger in a file with no name (the supervising process): the workers
        get its descriptor like the socket's, and nothing is left on disk however the server
        ends (uvicorn re-raises SIGTERM after its shutdown: no ``finally`` runs)."""
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
        os.ftruncate(fd, _SIZE)
        return cls(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)  # per process: the workers share one description
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def claim(self) -> None:
        """This process takes a free slot, or that of a worker that died, with a count of 0."""
        if self._slot is not None:
            return
        pid = os.getpid()
        with self._locked():
            for slot in range(SLOTS):
                holder = self._words[slot * _SLOT_WORDS]
                if holder == 0 or holder == pid or not process_alive(holder):
                    self._words[slot * _SLOT_WORDS + 1] = 0
                    self._words[slot * _SLOT_WORDS] = pid
                    self._slot = slot
                    return
        raise RuntimeError(f"more than {SLOTS} worker processes share one connection ledger")

    def release(self) -> None:
        """This process stops accepting: its slot is freed, so nobody waits for it."""
        if self._slot is not None:
            with self._locked():
                self._words[self._slot * _SLOT_WORDS] = 0
            self._slot = None

    @property
    def mine(self) -> int:
        if self._slot is None:
            return 0
        return int(self._words[self._slot * _SLOT_WORDS + 1])

    def add(self, change: int) -> None:
        if self._slot is not None:
            self._words[self._slot * _SLOT_WORDS + 1] += change

    def fewest_elsewhere(self) -> int | None:
        """The smallest count among the other live workers (None: no other)."""
        me = os.getpid()
        fewest: int | None = None
        for slot in range(SLOTS):
            pid = self._words[slot * _SLOT_WORDS]
            if pid == 0 or pid == me or not process_alive(pid):
                continue
            count = int(self._words[slot * _SLOT_WORDS + 1])
            fewest = count if fewest is None else min(fewest, count)
        return fewest

    def close(self) -> None:
        self._words.release()
        self._map.close()
        os.close(self.fd)


class _CountedConnection(socket.socket):
    """An accepted connection that takes itself off its worker's count when closed."""

    def __init__(self, *args: object, ledger: ConnectionLedger, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ledger: ConnectionLedger | None = ledger
        ledger.add(1)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.add(-1)
            self._ledger = None
        super().close()


class BalancedListener(socket.socket):
    """The shared listening socket, balanced by a ``ConnectionLedger``. Built by the supervising
    process around the socket uvicorn bound; pickled into each worker (the descriptor passed
    like multiprocessing passes any socket), where it joins the ledger when it starts
    listening, so a worker still loading its models is not counted as one that could accept."""

    def __init__(
        self, family: int, kind: int, proto: int, fileno: int, ledger: ConnectionLedger
    ) -> None:
        super().__init__(family, kind, proto, fileno)
        self.ledger = ledger
        self.clock = time.monotonic
        self._holding_since: float | None = None
        self._last_try = 0.0

    @classmethod
    def around(cls, sock: socket.socket, ledger: ConnectionLedger) -> BalancedListener:
        inheritable = sock.get_inheritable()
        listener = cls(sock.family, sock.type, sock.proto, sock.detach(), ledger)
        listener.set_inheritable(inheritable)
        return listener

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_listener,
            (DupFd(self.fileno()), self.family, self.type, self.proto, DupFd(self.ledger.fd)),
        )

    def listen(self, backlog: int = socket.SOMAXCONN) -> None:
        self.ledger.claim()
        super().listen(backlog)

    def close(self) -> None:
        """A worker shutting down closes its listener first (then drains its connections):
        from then on the others neither wait for it nor count it."""
        self.ledger.release()
        super().close()

    def accept(self) -> tuple[socket.socket, object]:
        if self._leave_to_another():
            raise BlockingIOError(errno.EAGAIN, "left for a worker with fewer connections")
        fd, address = self._accept()  # type: ignore[attr-defined]
        conn = _CountedConnection(self.family, self.type, self.proto, fd, ledger=self.ledger)
        if socket.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)  # what socket.accept does
        return conn, address

    def _leave_to_another(self) -> bool:
        """Whether a waiting connection is left for a worker holding fewer: only while one is,
        and for at most ``HOLD_SECONDS`` of tries (a later try starts a new hold)."""
        fewest = self.ledger.fewest_elsewhere()
        if fewest is None or self.ledger.mine <= fewest:
            self._holding_since = None
            return False
        now = self.clock()
        if self._holding_since is None or now - self._last_try > HOLD_SECONDS:
            self._holding_since = now
        self._last_try = now
        return now - self._holding_since < HOLD_SECONDS


class _PassedDescriptor(Protocol):
    """What multiprocessing's ``DupFd`` gives the child: the descriptor, once."""

    def detach(self) -> int: ...


def _rebuild_listener(
    descriptor: _PassedDescriptor, family: int, kind: int, proto: int, ledger: _PassedDescriptor
) -> BalancedListener:
    return BalancedListener(
        family, kind, proto, descriptor.detach(), ConnectionLedger(ledger.detach())
    )
