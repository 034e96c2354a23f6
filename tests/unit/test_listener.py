"""The balanced listening socket of ``facesvc serve --workers N`` (cli/listener.py): a worker
holding more connections than another live worker leaves a waiting connection to it, for at
most HOLD_SECONDS; closed connections come off the count; a dead worker's slot is neither read
nor kept. The other worker here is a real second process that joins the same ledger."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest

from facesvc.cli.listener import HOLD_SECONDS, BalancedListener, ConnectionLedger


class OtherWorker:
    """A second process on the ledger (its descriptor passed, as to uvicorn's workers),
    holding ``count`` connections until stopped."""

    def __init__(self, ledger: ConnectionLedger, count: int) -> None:
        code = textwrap.dedent(
            f"""
            import os, sys
            from facesvc.cli.listener import ConnectionLedger
            ledger = ConnectionLedger(os.dup({ledger.fd}))
            ledger.claim()
            ledger.add({count})
            print("joined", flush=True)
            for line in sys.stdin:  # "release": it stops accepting, as a closing listener does
                ledger.release()
                print("released", flush=True)
            """
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(ledger.fd,),
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "joined"

    def release(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("release\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)


@pytest.fixture
def ledger() -> Iterator[ConnectionLedger]:
    ledger = ConnectionLedger.create()
    yield ledger
    ledger.close()


@pytest.fixture
def listener(ledger: ConnectionLedger) -> Iterator[BalancedListener]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    listener = BalancedListener.around(sock, ledger)
    listener.listen(16)
    listener.setblocking(False)  # as the event loop holds it
    yield listener
    listener.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def connect(listener: BalancedListener) -> socket.socket:
    return socket.create_connection(listener.getsockname()[:2], timeout=10)


def accept_when_waiting(listener: BalancedListener) -> socket.socket:
    """Accept a connection the kernel has queued (a blocking wait for it first)."""
    listener.settimeout(10)
    try:
        conn, _ = listener.accept()
    finally:
        listener.setblocking(False)
    return conn


def test_the_worker_holding_more_leaves_a_new_connection_to_the_other(
    listener: BalancedListener, ledger: ConnectionLedger
) -> None:
    clock = Clock()
    listener.clock = clock
    other = OtherWorker(ledger, count=0)
    try:
        first = connect(listener)
        accepted = accept_when_waiting(listener)  # 0 against 0: taken
        assert ledger.mine == 1
        second = connect(listener)
        with pytest.raises(BlockingIOError):  # 1 against 0: left for the other worker
            listener.accept()
        clock.now += HOLD_SECONDS / 2
        with pytest.raises(BlockingIOError):
            listener.accept()
        clock.now += HOLD_SECONDS  # the other never took it: this worker does
        late, _ = listener.accept()
        assert ledger.mine == 2
        for conn in (accepted, late, first, second):
            conn.close()
        assert ledger.mine == 0
    finally:
        other.kill()


def test_equal_counts_accept_at_once_and_closing_takes_a_connection_off(
    listener: BalancedListener, ledger: ConnectionLedger
) -> None:
    other = OtherWorker(ledger, count=1)
    try:
        clients = [connect(listener)]
        conns = [accept_when_waiting(listener)]  # 0 against 1
        clients.append(connect(listener))
        conns.append(accept_when_waiting(listener))  # 1 against 1
        assert ledger.mine == 2
        clients.append(connect(listener))
        with pytest.raises(BlockingIOError):  # 2 against 1
            listener.accept()
        conns.pop().close()
        assert ledger.mine == 1
        conns.append(accept_when_waiting(listener))  # 1 against 1 again
        assert ledger.mine == 2
        for conn in conns + clients:
            conn.close()
    finally:
        other.kill()


def test_a_dead_worker_is_not_waited_for_and_its_slot_is_taken_again(
    listener: BalancedListener, ledger: ConnectionLedger
) -> None:
    other = OtherWorker(ledger, count=0)
    clients = [connect(listener)]
    conns = [accept_when_waiting(listener)]
    other.kill()
    assert ledger.fewest_elsewhere() is None
    clients.append(connect(listener))
    conns.append(accept_when_waiting(listener))  # 1 against nobody: taken
    # the slots: this worker's and the dead one's, which a new worker takes with a count of 0
    replacement = OtherWorker(ledger, count=0)
    try:
        assert ledger.fewest_elsewhere() == 0
        assert holders(ledger) == {os.getpid(), replacement.process.pid}
    finally:
        replacement.kill()
        for conn in conns + clients:
            conn.close()


def test_a_worker_whose_listener_closed_is_not_waited_for(
    listener: BalancedListener, ledger: ConnectionLedger
) -> None:
    """A worker shutting down closes its listener before draining its connections: from then
    on the others take every connection at once, though it still holds fewer."""
    other = OtherWorker(ledger, count=0)
    try:
        clients = [connect(listener)]
        conns = [accept_when_waiting(listener)]
        clients.append(connect(listener))
        with pytest.raises(BlockingIOError):  # 1 against 0
            listener.accept()
        other.release()
        assert ledger.fewest_elsewhere() is None
        conns.append(accept_when_waiting(listener))
        for conn in conns + clients:
            conn.close()
    finally:
        other.kill()
    # and this worker's own listener, closed, frees its slot the same way
    assert os.getpid() in holders(ledger)
    listener.close()
    assert os.getpid() not in holders(ledger)


def holders(ledger: ConnectionLedger) -> set[int]:
    """The pids holding a slot of the ledger."""
    return {int(ledger._words[slot * 2]) for slot in range(8)} - {0}


def _accept_one_and_report(listener: BalancedListener, report: Any) -> None:
    listener.listen(4)
    conn, _ = listener.accept()
    report.send(listener.ledger.mine)
    report.recv()  # until the parent has read the ledger
    conn.close()


def test_a_spawned_worker_gets_the_listener_and_the_ledger(
    ledger: ConnectionLedger, tmp_path: Path
) -> None:
    """How uvicorn hands the socket to its workers: pickled into a spawned process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    listener = BalancedListener.around(sock, ledger)
    context = get_context("spawn")
    receiving, sending = context.Pipe()
    worker = context.Process(target=_accept_one_and_report, args=(listener, sending))
    worker.start()
    try:
        client = None
        for _ in range(200):  # the child listens once it has started
            try:
                client = socket.create_connection(listener.getsockname()[:2], timeout=10)
                break
            except ConnectionRefusedError:
                worker.join(0.05)
        assert client is not None
        assert receiving.poll(60)
        assert receiving.recv() == 1  # counted in the child's own slot
        assert worker.pid in holders(ledger)  # of the same ledger, passed as a descriptor
        receiving.send("bye")
        client.close()
    finally:
        worker.join(30)
        listener.close()
    assert worker.exitcode == 0
