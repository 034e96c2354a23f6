"""Real nginx (Debian's package) with the project's nginx/nginx.conf, in front of a real server.

The config is the one docker-compose mounts, with only its environment-specific values
templated (upstream, listen address, file paths; see tests/support/nginx.py), so
what is checked here is the deployed proxy: docs, uploads, the request id, body limits.
Skipped when nginx is missing, failed under CI.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from facesvc.settings import PROJECT_ROOT
from tests.support.data import image_file, lfw_image
from tests.support.nginx import nginx_binary, render_nginx_conf
from tests.support.server_process import HOST, ServerProcess, free_port

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# client_max_body_size, read from the committed config
NGINX_BODY_LIMIT = (
    int(
        re.search(
            r"client_max_body_size\s+(\d+)m;", (PROJECT_ROOT / "nginx" / "nginx.conf").read_text()
        )[1]
    )  # type: ignore[index]
    * 1024
    * 1024
)


@dataclass(frozen=True)
class Proxy:
    base_url: str
    directory: Path

    def access_log(self, expect: str | None = None, timeout: float = 5.0) -> str:
        """The access log; with ``expect``, waits for that text: nginx writes a request's line
        after it has sent the response, so the client can read the log before it is there."""
        deadline = time.monotonic() + timeout
        while True:
            text = (self.directory / "access.log").read_text(encoding="utf-8", errors="replace")
            if expect is None or expect in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_proxy(live_server: ServerProcess, directory: Path) -> Iterator[Proxy]:
    """Debian's nginx with the committed config in front of ``live_server``; its rate-limit
    zone lives in this process's shared memory, so every proxy starts with full buckets."""
    binary = nginx_binary()
    port = free_port()
    conf = render_nginx_conf(
        directory, upstream=f"{HOST}:{live_server.port}", listen=f"{HOST}:{port}"
    )
    directives = "daemon off;"
    if os.geteuid() == 0:
        # Run as root, nginx's workers would become "nobody", who cannot enter pytest's
        # private temp dir (the temp files of bodies and responses live there).
        directives += f" user {pwd.getpwuid(0).pw_name};"
    with (directory / "nginx.stderr.log").open("wb") as err:
        process = subprocess.Popen(
            [
                binary,
                *("-c", str(conf), "-p", f"{directory}/", "-e", str(directory / "error.log")),
                *("-g", directives),
            ],
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    proxy = Proxy(f"http://{HOST}:{port}", directory)
    try:
        wait_until_proxying(proxy, process, live_server.headers)
        yield proxy
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def proxy(live_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with running_proxy(live_server, tmp_path_factory.mktemp("nginx")) as running:
        yield running


def wait_until_proxying(
    proxy: Proxy, process: subprocess.Popen[bytes], headers: dict[str, str], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nginx exited with {process.returncode}:\n{proxy.error_log()}")
        try:
            response = httpx.get(f"{proxy.base_url}/readyz", headers=headers, timeout=5)
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.1)
    pytest.fail(f"nginx did not proxy /readyz within {timeout:.0f}s (last: {last})")


@pytest.fixture
def client(proxy: Proxy, live_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.base_url, timeout=60, headers=live_server.headers) as c:
        yield c


def test_docs_and_their_assets_through_nginx(client: httpx.Client, proxy: Proxy) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)="(/static/docs/[^"]+)\"""", page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        # Large assets are buffered by nginx to its temp dir: the whole file must arrive.
        assert int(response.headers.get("content-length", len(response.content))) == len(
            response.content
        )
        assert len(response.content) > 1000, asset
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    assert "/v1/detect" in schema.json()["paths"]


def test_detect_enrol_and_verify_through_nginx(client: httpx.Client, data_dir: Path) -> None:
    detected = client.post("/v1/detect", files=image_file(lfw_image("Hugo_Chavez", 1)))
    assert detected.status_code == 200, detected.text
    assert len(detected.json()["faces"]) >= 1

    created = client.post(
        "/v1/users", json={"name": "Hugo Chavez", "external_id": f"nginx-{uuid.uuid4().hex[:8]}"}
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    for number in (1, 2):
        enrolled = client.post(
            f"/v1/users/{user_id}/faces",
            files=image_file(lfw_image("Hugo_Chavez", number)),
            data={"consent": "true"},
        )
        assert enrolled.status_code == 201, enrolled.text
    verified = client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Hugo_Chavez", 3))
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["match"] is True, verified.json()
    assert verified.json()["faces_compared"] == 2
    assert client.delete(f"/v1/users/{user_id}").status_code == 204


def test_request_id_passes_through(client: httpx.Client, proxy: Proxy) -> None:
    mine = f"nginx-e2e-{uuid.uuid4().hex[:12]}"
    response = client.get("/v1/users", headers={"X-Request-ID": mine})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == mine, "the api did not get the caller's id"
    assert f"rid={mine}" in proxy.access_log(f"rid={mine}")

    # None sent: nginx makes one up, the api uses it, and both logs can be matched by it.
    response = client.get("/v1/users")
    generated = response.headers["X-Request-ID"]
    assert REQUEST_ID.fullmatch(generated), generated
    assert f"rid={generated}" in proxy.access_log(f"rid={generated}")

    # Not a sane token: replaced by nginx's own.
    response = client.get("/v1/users", headers={"X-Request-ID": "bad id; rm -rf /"})
    assert REQUEST_ID.fullmatch(response.headers["X-Request-ID"])


def test_oversized_upload_is_refused_by_nginx(client: httpx.Client, proxy: Proxy) -> None:
    too_big = b"\xff\xd8\xff\xe0" + b"\0" * (NGINX_BODY_LIMIT + 1024 * 1024)
    response = client.post("/v1/detect", files=image_file(too_big, "huge.jpg"))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "/problems/payload-too-large"
    assert body["status"] == 413
    assert "proxy" in body["detail"], "answered by the api, not by nginx"
    assert "client intended to send too large body" in proxy.error_log()


def test_bursts_are_rate_limited_with_problem_json(
    live_server: ServerProcess, tmp_path: Path
) -> None:
    """10 r/s with a burst of 20 per client address (limit_req on every location but probes).

    A proxy of its own, so no other test has drawn on the bucket; what is checked is the
    bucket's arithmetic against the measured time, not an assumed request speed."""
    with (
        running_proxy(live_server, tmp_path) as proxy,
        httpx.Client(base_url=proxy.base_url, timeout=60, headers=live_server.headers) as client,
    ):
        start = time.monotonic()
        statuses: list[int] = []
        limited = None
        while limited is None and len(statuses) < 500:
            response = client.get("/problems/no-face")
            statuses.append(response.status_code)
            if response.status_code == 429:
                limited = response
        elapsed = time.monotonic() - start
        assert limited is not None, f"no 429 in {len(statuses)} requests over {elapsed:.1f} s"
        passed = statuses.count(200)
        assert passed == len(statuses) - 1, statuses  # only the last one was refused
        # A full bucket lets the burst of 20 and the one request of the rate through at
        # once; then one more every 100 ms.
        assert 21 <= passed <= 21 + int(elapsed * 10) + 1, (passed, elapsed)
        assert limited.headers["content-type"].startswith(PROBLEM)
        assert limited.headers["Retry-After"] == "1"
        assert limited.json()["status"] == 429
        # The probes are never limited, even with an empty bucket.
        assert client.get("/livez").status_code == 200
        assert "limiting requests" in proxy.error_log()
