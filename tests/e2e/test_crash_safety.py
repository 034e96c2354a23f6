"""``kill -9`` of a real server in the middle of a burst loses nothing acknowledged.

A 201 is sent only after the enrolment's transaction committed (SQLite WAL): after SIGKILL the
database must pass ``PRAGMA integrity_check`` and hold every face that was answered 201,
through the raw file and through a restarted server. The same for verifications, whose writes
two workers group-commit under a turn between them: every 200 has its audit row, and the
restarted server writes at once (no turn or lock left behind by the killed writers).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.data import image_file, lfw_image
from tests.support.server_process import ServerProcess
from tests.support.servers import http_client, serving

pytestmark = pytest.mark.e2e

PEOPLE = ("Colin_Powell", "Laura_Bush", "Vladimir_Putin", "Junichiro_Koizumi")
WORKERS = 8
ACKS_BEFORE_KILL = 24


def integrity(db: Path) -> str:
    connection = sqlite3.connect(db)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def stored_face_ids(db: Path) -> set[uuid.UUID]:
    connection = sqlite3.connect(db)
    try:
        return {uuid.UUID(str(row[0])) for row in connection.execute("SELECT id FROM faces")}
    finally:
        connection.close()


@dataclass
class Burst:
    acknowledged: list[Any]  # what ``ack`` made of each response answered ``ok``
    refused: list[str]  # any other answer
    killed_at: int  # acknowledged when the kill came


def burst_then_kill(
    server: ServerProcess,
    send: Callable[[httpx.Client, int], httpx.Response],
    ok: int,
    ack: Callable[[httpx.Response], Any],
    acks_before_kill: int,
    victims: Callable[[], list[int]],
) -> Burst:
    """WORKERS threads ``send`` requests (each its own keep-alive client) until SIGKILL of
    ``victims()`` once ``acks_before_kill`` were answered ``ok`` (or 120 s passed): WORKERS
    requests are in flight then. A request cut off by the kill was never acknowledged."""
    burst = Burst([], [], 0)
    lock = threading.Lock()
    stop = threading.Event()

    def until_killed(worker: int) -> None:
        with http_client(server, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = send(client, worker)
                except httpx.TransportError:
                    return  # the server is gone: this request was never acknowledged
                with lock:
                    if response.status_code == ok:
                        burst.acknowledged.append(ack(response))
                    else:
                        burst.refused.append(f"{response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(until_killed, w) for w in range(WORKERS)]
        deadline = time.monotonic() + 120
        while len(burst.acknowledged) < acks_before_kill and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in victims():
            os.kill(pid, signal.SIGKILL)
        burst.killed_at = len(burst.acknowledged)
        stop.set()
        for future in futures:
            future.result()
    return burst


def test_kill_9_during_enrolments_keeps_every_acknowledged_face(
    tmp_path: Path, data_dir: Path
) -> None:
    db = tmp_path / "facesvc.db"
    quiet = {"FACESVC_LOG_LEVEL": "warning"}
    photos = {name: lfw_image(name, 1) for name in PEOPLE}

    with serving(tmp_path / "first", database=db, env=quiet) as first:
        with http_client(first) as http:
            users = {}
            for name in PEOPLE:
                created = http.post("/v1/users", json={"name": name.replace("_", " ")})
                assert created.status_code == 201, created.text
                users[name] = created.json()["id"]

        def enrol(client: httpx.Client, worker: int) -> httpx.Response:
            name = PEOPLE[worker % len(PEOPLE)]
            return client.post(
                f"/v1/users/{users[name]}/faces",
                files=image_file(photos[name]),
                data={"consent": "true"},
            )

        burst = burst_then_kill(
            first,
            enrol,
            201,
            lambda response: response.json()["face_id"],  # face ids answered 201
            ACKS_BEFORE_KILL,
            lambda: [first.pid],
        )
        assert first.stop() == -signal.SIGKILL

    assert not burst.refused, burst.refused
    killed_at = burst.killed_at
    assert killed_at >= ACKS_BEFORE_KILL, f"only {killed_at} enrolments before the deadline"
    assert integrity(db) == "ok"
    acked_ids = {uuid.UUID(face_id) for face_id in burst.acknowledged}
    assert acked_ids <= stored_face_ids(db), "an acknowledged enrolment is missing"

    # The same database and admin key: a restart, not a new deployment.
    with (
        serving(tmp_path / "second", database=db, env=quiet, api_key=first.api_key) as second,
        http_client(second) as http,
    ):
        listed: set[uuid.UUID] = set()
        for user_id in users.values():
            response = http.get(f"/v1/users/{user_id}/faces")
            assert response.status_code == 200, response.text
            listed |= {uuid.UUID(f["face_id"]) for f in response.json()["items"]}
        assert acked_ids <= listed
        found = http.post("/v1/identify", files=image_file(lfw_image("Laura_Bush", 2)))
        assert found.status_code == 200, found.text
        assert found.json()["match"] == users["Laura_Bush"]
    assert integrity(db) == "ok"


def audited_request_ids(db: Path) -> set[str]:
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute("SELECT request_id FROM audit_events WHERE action = 'verify'")
        return {str(row[0]) for row in rows}
    finally:
        connection.close()


def test_kill_9_during_group_committed_verifies_keeps_every_acknowledged_audit_row(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two workers, each group-committing its verifications' writes under the turn between
    them; kill -9 of the whole server mid-burst (a writer may hold the turn and SQLite's lock).
    Every verification answered 200 has its audit row (its request id), the file is intact,
    and a restarted server takes the turn and writes at once."""
    db = tmp_path / "facesvc.db"
    env = {"FACESVC_LOG_LEVEL": "warning", "FACESVC_LOCKOUT_MAX_FAILURES": "1000000"}
    probes = [lfw_image("Colin_Powell", 2), lfw_image("Laura_Bush", 1)]  # a match, a stranger

    with serving(tmp_path / "first", database=db, env=env, workers=2) as first:
        with http_client(first) as http:
            user = http.post("/v1/users", json={"name": "Colin Powell"}).json()["id"]
            enrolled = http.post(
                f"/v1/users/{user}/faces",
                files=image_file(lfw_image("Colin_Powell", 1)),
                data={"consent": "true"},
            )
            assert enrolled.status_code == 201, enrolled.text

        def verify(client: httpx.Client, worker: int) -> httpx.Response:
            return client.post(f"/v1/users/{user}/verify", files=image_file(probes[worker % 2]))

        burst = burst_then_kill(
            first,
            verify,
            200,
            lambda response: response.headers["X-Request-ID"],  # request ids answered 200
            3 * ACKS_BEFORE_KILL,
            # the parent and both workers at once, as a machine losing power would
            lambda: [first.pid, *_children(first.pid)],
        )
        assert first.stop() == -signal.SIGKILL

    assert not burst.refused, burst.refused
    killed_at = burst.killed_at
    assert killed_at >= 3 * ACKS_BEFORE_KILL, f"only {killed_at} verifications before the deadline"
    assert integrity(db) == "ok"
    missing = set(burst.acknowledged) - audited_request_ids(db)
    assert not missing, f"{len(missing)} acknowledged verifications have no audit row"

    with (
        serving(tmp_path / "second", database=db, env=env, api_key=first.api_key) as second,
        http_client(second, timeout=30) as http,
    ):
        again = http.post(f"/v1/users/{user}/verify", files=image_file(probes[0]))
        assert again.status_code == 200, again.text
        assert again.json()["match"] is True
        assert again.headers["X-Request-ID"] in audited_request_ids(db)
    assert integrity(db) == "ok"


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the server's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
