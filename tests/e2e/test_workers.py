"""Several worker processes on one database agree on the 1:N gallery.

Each worker has its own in-memory index; a change made through one worker reaches the
others through the gallery version row, so identify never misses a committed enrolment
nor returns a deleted user, whichever worker answers.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from facesvc.inference.devices import DEFAULT_MAX_WORKERS, usable_cpu_count
from tests.support.data import lfw_image, require_data
from tests.support.pg import postgres_server  # noqa: F401  (fixture)
from tests.support.procfs import process_tree
from tests.support.server_process import ServerProcess
from tests.support.servers import http_client, serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two workers on SQLite, and on PostgreSQL (the database for several workers)."""
    require_data()
    url = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres_server")
        url = pg.url_for(pg.create_database())
    with serving(
        tmp_path_factory.mktemp("workers"), args=["--workers", "2"], database_url=url
    ) as server:
        yield server


def test_enrol_and_delete_reach_every_worker(two_workers: ServerProcess) -> None:
    # fresh connections per request so the kernel spreads them over both workers
    def post(path: str, **kwargs: object) -> httpx.Response:
        with http_client(two_workers) as c:
            return c.post(path, **kwargs)  # type: ignore[arg-type]

    user = post("/v1/users", json={"name": "Junichiro Koizumi"}).json()
    for number in (1, 2):
        r = post(
            f"/v1/users/{user['id']}/faces",
            files={"image": lfw_image("Junichiro_Koizumi", number)},
            data={"consent": "true"},
        )
        assert r.status_code == 201, r.text
    for number in range(3, 11):
        r = post("/v1/identify", files={"image": lfw_image("Junichiro_Koizumi", number)})
        assert r.status_code == 200, r.text
        assert r.json()["match"] == user["id"], f"photo {number}: {r.json()}"
    with http_client(two_workers) as c:
        assert c.delete(f"/v1/users/{user['id']}").status_code == 204
    for number in range(3, 9):
        r = post("/v1/identify", files={"image": lfw_image("Junichiro_Koizumi", number)})
        assert user["id"] not in [c["user_id"] for c in r.json()["candidates"]]


def test_a_revoked_key_is_refused_by_every_worker_at_once(two_workers: ServerProcess) -> None:
    """Each worker caches the callers of keys it has seen (SQLite: no query per request);
    a revocation through one worker reaches the other's cache at its next request."""
    with http_client(two_workers) as admin:
        created = admin.post("/v1/keys", json={"name": "kiosk", "scopes": ["enrol"]})
    assert created.status_code == 201, created.text
    secret, key_id = created.json()["key"], created.json()["id"]

    def attempt() -> tuple[int, int]:
        """(worker pid, status) over one fresh connection: both requests reach one worker."""
        with httpx.Client(base_url=two_workers.base_url, timeout=60) as c:
            pid = c.get("/readyz").json()["worker"]["pid"]
            return pid, c.get("/v1/users", headers={"X-API-Key": secret}).status_code

    def until_both_workers_answered() -> list[tuple[int, int]]:
        seen: list[tuple[int, int]] = []
        while len({pid for pid, _ in seen}) < 2 and len(seen) < 200:
            seen.append(attempt())  # fresh connections: the kernel spreads them
        assert len({pid for pid, _ in seen}) == 2, "one worker took every connection"
        return seen

    before = until_both_workers_answered()  # both workers have cached the key
    assert {status for _, status in before} == {200}, before
    with http_client(two_workers) as admin:
        assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
    after = until_both_workers_answered()
    assert {status for _, status in after} == {401}, (before, after)


def test_connections_opened_at_once_are_shared_evenly(two_workers: ServerProcess) -> None:
    """A client pool that opens 14 keep-alive connections at once while its first 2 are busy
    (as bench/http_load.py's does): each worker holds 8 of the 16, give or take one that its
    emptier worker was slower than HOLD_SECONDS to take; uvicorn's own accept (the first worker
    to wake takes every connection waiting) gave one worker 12-15. Three bursts."""
    host, port = two_workers.base_url.removeprefix("http://").split(":")
    photo = lfw_image("Junichiro_Koizumi", 1)
    for burst in range(3):
        stop, working = threading.Event(), [threading.Event(), threading.Event()]

        def busy(working: threading.Event, stop: threading.Event = stop) -> int:
            with http_client(two_workers) as c:
                pid = c.get("/readyz").json()["worker"]["pid"]
                while not stop.is_set():
                    assert c.post("/v1/detect", files={"image": photo}).status_code == 200
                    working.set()
            return int(pid)

        with ThreadPoolExecutor(2) as pool:
            busy_pids = [pool.submit(busy, event) for event in working]
            for event in working:  # both busy connections are open and working
                assert event.wait(timeout=120)
            connections = [
                http.client.HTTPConnection(host, int(port), timeout=60) for _ in range(14)
            ]
            try:
                for connection in connections:
                    connection.connect()
                pids = []
                for connection in connections:
                    connection.request("GET", "/readyz", headers=two_workers.headers)
                    response = connection.getresponse()
                    assert response.status == 200
                    pids.append(json.loads(response.read())["worker"]["pid"])
            finally:
                stop.set()
                for connection in connections:
                    connection.close()
            pids += [future.result() for future in busy_pids]
        counts = sorted(Counter(pids).values())
        assert len(counts) == 2, f"burst {burst}: {counts}"
        assert counts[1] - counts[0] <= 2, f"burst {burst}: {counts}"


def worker_processes(server: ServerProcess) -> list[int]:
    """The server's worker processes: uvicorn spawns them with multiprocessing."""
    found = []
    for pid in process_tree(server.pid)[1:]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def test_serve_uses_every_core_by_default(tmp_path: Path) -> None:
    """No --workers: one worker per usable core (at most 8), each model single-threaded in
    each worker (workers x threads = cores), as `make run` and the image start it."""
    cores = usable_cpu_count()
    expected = min(cores, DEFAULT_MAX_WORKERS)
    with serving(tmp_path, workers=None) as server:
        with http_client(server) as c:
            worker = c.get("/readyz").json()["worker"]
        assert worker["workers"] == expected
        assert worker["cores"] == cores
        assert worker["threads_per_model"] == max(1, cores // expected)
        if expected > 1:
            assert worker["pid"] in worker_processes(server)
            assert len(worker_processes(server)) == expected
        else:
            assert worker["pid"] == server.pid
    assert f"{expected} worker(s) x " in server.stderr_path.read_text()


def test_one_worker_gets_every_core_for_its_models(live_server: ServerProcess) -> None:
    with http_client(live_server) as c:
        worker = c.get("/readyz").json()["worker"]
    cores = usable_cpu_count()
    assert (worker["workers"], worker["index"], worker["pid"]) == (1, 0, live_server.pid)
    assert worker["threads_per_model"] == cores
