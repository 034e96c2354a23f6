"""The real deployment: the Dockerfile built and docker-compose.yml run by a real container
engine (podman + podman-compose), every request through nginx only.

The stack is the committed compose file, unchanged but for its variables: base images (the
Debian-built stand-ins of scripts/local-base-images.sh, since no registry is reachable here),
the image tag and nginx's host address (127.0.0.1 and a free port). It is brought up in the
order the file's depends_on declares (db healthy -> migrate exited 0 -> two api replicas
healthy -> nginx), driven here because podman < 4.6 (Debian 12 has 4.3) ignores health
conditions, and health checks run on demand (``podman healthcheck run``: no systemd timers in
this VM). Then: a user enrolled, verified and identified, /docs, a 413; everything restarted
and the data still there (PostgreSQL's volume); one api replica stopped under a small bounded
load, nginx answering on the other. ``compose down -v`` at the end, whatever happened.

Needs root and podman (scripts/system-deps.sh installs it); skipped without, failed under CI.
Figures (build, start, failover, with the machine) go to .cache/compose-test.json and the
test log; README's come from bench/results/compose_test.json, a copy of one such run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from facesvc.inference.runtimes import cpu_flags
from facesvc.security.crypto import generate_data_key
from facesvc.security.keys import generate_api_key
from facesvc.settings import PROJECT_ROOT
from tests.e2e.conftest import require_tool
from tests.support.data import lfw_image
from tests.support.server_process import free_port

pytestmark = pytest.mark.e2e

PROJECT = "facesvc-compose-test"
STANDIN = "localhost/facesvc-standin"
IMAGES = {
    "PYTHON_IMAGE": f"{STANDIN}/debian:bookworm",
    "POSTGRES_IMAGE": f"{STANDIN}/postgres:17-pgvector",
    "NGINX_IMAGE": f"{STANDIN}/nginx:1.22",
}
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# What the image is built from (the Dockerfile's COPYs): its tag is their hash, so an
# unchanged tree reuses the image.
IMAGE_INPUTS = (
    "Dockerfile",
    "pyproject.toml",
    "alembic.ini",
    "alembic",
    "src",
    "models/manifest.json",
    "models/calibration",
)
FIGURES = PROJECT_ROOT / ".cache" / "compose-test.json"


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in IMAGE_INPUTS:
        path = PROJECT_ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            relative = file.relative_to(PROJECT_ROOT)
            if "__pycache__" in relative.parts or ".egg-info" in str(relative):
                continue
            digest.update(str(relative).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def run(args: list[str], timeout: float = 600, check: bool = True, **kwargs: Any) -> str:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {done.returncode}\n{done.stderr[-4000:]}")
    return done.stdout


def container_logs(name: str, tail: int = 40) -> str:
    """A container's output: podman gives its stderr on stderr, its stdout on stdout."""
    done = subprocess.run(
        ["podman", "logs", "--tail", str(tail), name], capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


@dataclass
class Stack:
    compose_cmd: list[str]
    env: dict[str, str]
    base_url: str
    admin_key: str
    figures: dict[str, Any] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600) -> str:
        return run([*self.compose_cmd, *args], timeout=timeout, env=self.env, cwd=PROJECT_ROOT)

    def containers(self, service: str) -> list[str]:
        out = run(
            [
                "podman",
                "ps",
                "-a",
                "--filter",
                f"label=io.podman.compose.project={PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ]
        )
        return sorted(out.split())

    def wait_healthy(self, service: str, timeout: float = 300) -> float:
        """Seconds until every container of ``service`` passes its health check."""
        pending = set(self.containers(service))
        assert pending, f"no {service} container"
        return self.wait_containers_healthy(pending, service, timeout)

    def wait_containers_healthy(
        self, names: set[str], service: str = "", timeout: float = 300
    ) -> float:
        """Seconds until each of these containers passes its health check."""
        started = time.monotonic()
        pending = set(names)
        while pending:
            for name in sorted(pending):
                done = subprocess.run(
                    ["podman", "healthcheck", "run", name], capture_output=True, check=False
                )
                if done.returncode == 0:
                    pending.discard(name)
            if pending and time.monotonic() - started > timeout:
                logs = {n: container_logs(n) for n in pending}
                raise AssertionError(f"{service} not healthy after {timeout} s: {logs}")
            if pending:
                time.sleep(2)
        return time.monotonic() - started

    def up(self) -> None:
        """db -> migrate -> api x2 -> nginx, each waited for as depends_on declares."""
        started = time.monotonic()
        self.compose("up", "-d", "--no-deps", "--no-build", "db")
        self.wait_healthy("db")
        self.compose("up", "-d", "--no-deps", "--no-build", "migrate")
        (migrate,) = self.containers("migrate")
        assert run(["podman", "wait", migrate]).strip() == "0", container_logs(migrate)
        self.compose("up", "-d", "--no-deps", "--no-build", "api")
        assert len(self.containers("api")) == 2, "the compose file runs two api replicas"
        self.wait_healthy("api")
        self.compose("up", "-d", "--no-deps", "--no-build", "nginx")
        self.wait_ready()
        self.figures.setdefault("start_to_ready_s", round(time.monotonic() - started, 1))

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "nginx never answered /readyz with 200"
            time.sleep(1)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"X-API-Key": self.admin_key}, timeout=60
        )


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and speed flags, cores, podman."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), None
    )
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "f16c")))
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "podman": run(["podman", "--version"]).strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def compose_command() -> list[str]:
    found = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not Path(found).exists():
        pytest.fail("podman-compose is missing: it is a dev dependency (make install)")
    return [found, "-p", PROJECT, "-f", str(PROJECT_ROOT / "docker-compose.yml")]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_tool("podman", install="apt-get install podman runc (scripts/system-deps.sh)")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the compose test needs root (podman, debootstrap)", pytrace=False)
        pytest.skip("the compose test needs root (podman, debootstrap)")
    figures: dict[str, Any] = {"machine": machine()}
    started = time.monotonic()
    run(["bash", str(PROJECT_ROOT / "scripts" / "local-base-images.sh")], timeout=900)
    figures["base_images_s"] = round(time.monotonic() - started, 1)
    # seconds, before a 5-minute build: the stack's networks (bridge + internal, service
    # names through aardvark-dns) work, else one line naming the missing package
    check = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/check-container-network.sh"), IMAGES["PYTHON_IMAGE"]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check.returncode != 0:
        pytest.fail(check.stderr.strip(), pytrace=False)

    tag = f"compose-{source_hash()}"
    image = f"localhost/facesvc:{tag}"
    started = time.monotonic()
    if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        # host network for the build's pip: with netavark (which the stack's internal
        # network needs for DNS) this VM's bridge gives a build container no name lookup
        build = ["podman", "build", "--network", "host", "--format", "docker", "--build-arg"]
        build += [f"PYTHON_IMAGE={IMAGES['PYTHON_IMAGE']}", "-t", image]
        if Path(CA_BUNDLE).exists():  # the host's CAs, for pip behind a TLS-inspecting proxy
            build += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        run([*build, str(PROJECT_ROOT)], timeout=1800)
        figures["image_built"] = True
        for old in run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).split():
            if old.startswith("localhost/facesvc:compose-") and old != image:
                run(["podman", "rmi", old], check=False)  # earlier trees' images (3 GiB each)
    else:
        figures["image_built"] = False  # the same sources were built before: reused
    figures["build_s"] = round(time.monotonic() - started, 1)
    size = run(["podman", "image", "inspect", image, "--format", "{{.Size}}"]).strip()
    figures["image_size_mib"] = round(int(size) / 2**20)

    port = free_port()
    admin_key = generate_api_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESVC_", "POSTGRES_"))}
    env.update(
        IMAGES,
        POSTGRES_PASSWORD=secrets.token_hex(16),
        FACESVC_BOOTSTRAP_API_KEY=admin_key,
        FACESVC_ENCRYPTION_KEY=generate_data_key("compose"),
        FACESVC_IMAGE_TAG=tag,
        NGINX_PUBLISH=f"127.0.0.1:{port}",
    )
    stack = Stack(compose_command(), env, f"http://127.0.0.1:{port}", admin_key, figures)
    stack.compose("down", "-v", timeout=300)  # a previous run's leftovers
    try:
        stack.up()
        yield stack
    finally:
        for service in ("db", "migrate", "api", "nginx"):
            for name in stack.containers(service):
                log = subprocess.run(
                    ["podman", "logs", "--tail", "300", name],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,  # the services log to stderr
                    text=True,
                    check=False,
                ).stdout
                (PROJECT_ROOT / ".cache").mkdir(exist_ok=True)
                (PROJECT_ROOT / ".cache" / f"compose-{name}.log").write_text(log)
        stack.compose("down", "-v", timeout=300)
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
        print("compose figures:", json.dumps(figures))


def enrol(client: httpx.Client, name: str, person: str, numbers: tuple[int, ...]) -> str:
    user = client.post("/v1/users", json={"name": name})
    assert user.status_code == 201, user.text
    uid = str(user.json()["id"])
    for number in numbers:
        face = client.post(
            f"/v1/users/{uid}/faces",
            files={"image": ("p.jpg", lfw_image(person, number), "image/jpeg")},
            data={"consent": "true"},
        )
        assert face.status_code == 201, face.text
    return uid


def verify(client: httpx.Client, uid: str, person: str, number: int) -> httpx.Response:
    return client.post(
        f"/v1/users/{uid}/verify",
        files={"image": ("p.jpg", lfw_image(person, number), "image/jpeg")},
    )


def test_the_stack_serves_through_nginx(stack: Stack) -> None:
    with stack.client() as client:
        uid = enrol(client, "Colin Powell", "Colin_Powell", (1, 2))
        verified = verify(client, uid, "Colin_Powell", 3)
        assert verified.status_code == 200, verified.text
        assert verified.json()["match"] is True
        found = client.post(
            "/v1/identify",
            files={"image": ("p.jpg", lfw_image("Colin_Powell", 4), "image/jpeg")},
        )
        assert found.status_code == 200, found.text
        assert found.json()["match"] == uid
        # the seed tutorial's client, unchanged: the photo as `file`, the name as a form field
        seed = client.post(
            "/face_login",
            data={"name": "Colin Powell"},
            files={"file": ("p.jpg", lfw_image("Colin_Powell", 5), "image/jpeg")},
        )
        assert seed.status_code == 200, seed.text
        assert seed.json()["match"] is True
        gone = client.get("/face_detect", params={"url": "/etc/passwd"})
        assert gone.status_code == 410
        assert gone.json()["type"] == "/problems/uploads-only"
        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        big = client.post("/v1/detect", files={"image": ("big.jpg", b"\xff" * (22 << 20))})
        assert big.status_code == 413
        assert big.headers["content-type"].startswith("application/problem+json")
        stack.figures["user_id"] = uid
    for name in stack.containers("api"):  # the image's user, not root
        assert run(["podman", "exec", name, "id", "-u"]).strip() == "10001"
    # the image keeps its HEALTHCHECK (podman builds it with --format docker)
    image = run(["podman", "inspect", stack.containers("api")[0], "--format", "{{.ImageName}}"])
    health = run(["podman", "image", "inspect", image.strip(), "--format", "{{.HealthCheck}}"])
    assert "/livez" in health, health


def test_users_and_faces_survive_restarts(stack: Stack) -> None:
    with stack.client() as client:
        before = client.get("/v1/users", params={"limit": 100}).json()
    stack.compose("restart", "db", "api", timeout=300)
    stack.wait_healthy("db")
    stack.wait_healthy("api")
    # nginx resolved "api" when it started; restarted replicas may have new addresses
    stack.compose("restart", "nginx", timeout=120)
    stack.wait_ready()
    with stack.client() as client:
        after = client.get("/v1/users", params={"limit": 100}).json()
        assert after == before
        uid = stack.figures["user_id"]
        assert client.get(f"/v1/users/{uid}").json()["face_count"] == 2
        again = verify(client, uid, "Colin_Powell", 5)
        assert again.status_code == 200, again.text
        assert again.json()["match"] is True


def test_nginx_keeps_answering_when_a_replica_stops(stack: Stack) -> None:
    """Two clients verify in a loop (about 5 requests/s in all: under nginx's rate limit)
    while one api replica is stopped gracefully: every request must be answered. The stopping
    replica finishes what it was doing; a connection it had not read yet is reset, and nginx
    sends that verify to the other replica (nginx.conf retries the POSTs that store nothing
    but an audit row; before it did, 3 of 7 runs lost one request). The requests that
    overlapped the shutdown are counted and reported."""
    uid = stack.figures["user_id"]
    requests: list[tuple[float, float, str]] = []  # (start, end, status or error)
    window: list[float] = []

    async def load(seconds: float) -> None:
        headers = {"X-API-Key": stack.admin_key}
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=60) as c:
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    answer = await c.post(
                        f"/v1/users/{uid}/verify",
                        files={"image": ("p.jpg", lfw_image("Colin_Powell", 6), "image/jpeg")},
                    )
                    key = str(answer.status_code)
                except httpx.TransportError as exc:
                    key = type(exc).__name__
                requests.append((started, time.monotonic(), key))
                await asyncio.sleep(0.3)

    async def stop_one() -> None:
        await asyncio.sleep(4)
        victim = stack.containers("api")[-1]
        window.append(time.monotonic())
        await asyncio.to_thread(run, ["podman", "stop", "-t", "30", victim])
        window.append(time.monotonic())

    async def scenario() -> None:
        await asyncio.gather(load(14), load(14), stop_one())

    asyncio.run(scenario())
    begin, end = window
    statuses: dict[str, int] = {}
    for _, _, key in requests:
        statuses[key] = statuses.get(key, 0) + 1
    failed = [r for r in requests if not r[2].isdigit() or r[2].startswith("5")]
    overlapping = [r for r in requests if r[0] < end and r[1] > begin]
    stack.figures["failover"] = {
        "statuses": statuses,
        "failed": len(failed),
        "in_flight_during_shutdown": len(overlapping),
        "shutdown_seconds": round(end - begin, 2),
    }
    assert statuses.get("200", 0) >= 20, statuses
    assert not failed, statuses
    after = [r for r in requests if r[0] > end]
    assert after, "no request after the stop"
    assert all(r[2] == "200" for r in after), statuses
    with stack.client() as client:  # and the survivor serves alone
        alone = verify(client, uid, "Colin_Powell", 7)
        assert alone.status_code == 200, alone.text


def test_a_face_enrolled_through_one_replica_is_found_through_the_other(stack: Stack) -> None:
    """The stack keeps its gallery in PostgreSQL (FACESVC_GALLERY_BACKEND=pgvector): a face
    committed through one replica is identified through the other, which never heard of it
    (no gallery copy, no version row, no reload). The failover test above left one replica
    stopped: enrol through the survivor, start the stopped one, stop the survivor, identify."""
    first, second = stack.containers("api")
    if run(["podman", "inspect", first, "--format", "{{.State.Running}}"]).strip() == "true":
        first, second = second, first  # `first`: the stopped one
    assert run(["podman", "inspect", first, "--format", "{{.State.Running}}"]).strip() != "true"
    with stack.client() as client:
        ready = client.get("/readyz").json()
        assert ready["gallery_backend"] == "pgvector", ready
        uid = enrol(client, "Gloria Macapagal Arroyo", "Gloria_Macapagal_Arroyo", (1, 2))
    run(["podman", "start", first])
    stack.wait_containers_healthy({first}, "api")
    run(["podman", "stop", "-t", "30", second])
    stack.compose("restart", "nginx", timeout=120)  # the started replica may have a new address
    stack.wait_ready()
    with stack.client() as client:
        found = client.post(
            "/v1/identify",
            files={"image": ("p.jpg", lfw_image("Gloria_Macapagal_Arroyo", 3), "image/jpeg")},
        )
        assert found.status_code == 200, found.text
        assert found.json()["match"] == uid, found.json()
    run(["podman", "start", second])
