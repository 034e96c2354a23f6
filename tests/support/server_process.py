"""A real ``facesvc serve`` process on 127.0.0.1, for end-to-end tests and benchmarks.

Only the standard library and ``facesvc`` are used here (no pytest, no httpx), so the bench
scripts and the test suite can share it. The server runs the installed console script with the
same Python, on its own database; its stdout and stderr go to files, never to pipes nobody reads.

``start_server(directory)`` is the one way tests start a server: a fresh SQLite file, migrated,
a free port, an admin API key of its own (``server.api_key``, sent by ``server.headers``), and
``BASE_SERVER_ENV``; it waits for /readyz and always stops the process.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from facesvc.security.crypto import generate_data_key
from facesvc.settings import PROJECT_ROOT
from tests.support.procfs import proc_status_kib

HOST = "127.0.0.1"
API_KEY_HEADER = "X-API-Key"
BOOTSTRAP_API_KEY = "FACESVC_BOOTSTRAP_API_KEY"

# Settings every server started here gets, under the caller's own `env`: a data key for the
# embeddings at rest (the service refuses to start without one), fresh for this process, so
# a server restarted by the same test run still reads what it stored.
BASE_SERVER_ENV: dict[str, str] = {"FACESVC_ENCRYPTION_KEY": generate_data_key("test")}


class ServerError(RuntimeError):
    """The server could not be migrated or started, or did not become ready in time."""


def facesvc_command() -> list[str]:
    """The ``facesvc`` console script next to this interpreter, else ``python -m facesvc.cli``."""
    script = Path(sys.executable).with_name("facesvc")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "facesvc.cli"]


def free_port() -> int:
    # Another process may take the port before the server binds it; the server would then
    # exit at once and wait_* reports its stderr.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``facesvc serve`` as a subprocess on a free port of 127.0.0.1.

    >>> with ServerProcess(url, log_dir) as server:   # migrates, starts, waits for /readyz
    ...     ...                                        # server.base_url, server.pid
    ...                                                # server.api_key, server.headers

    The server's environment: this process's, then ``BASE_SERVER_ENV``, then ``env``. Its
    bootstrap admin key is ``api_key``, else ``env``'s ``FACESVC_BOOTSTRAP_API_KEY``, else a
    random one; every request must send it (``headers``).
    """

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = PROJECT_ROOT,
        args: Sequence[str] | None = None,
        api_key: str | None = None,
        workers: int | None = 1,
    ) -> None:
        self.args = list(args or [])  # extra `facesvc serve` options, e.g. ["--migrate"]
        # One worker unless asked: a test's server is small and predictable; None leaves it to
        # `serve` (one worker per usable core, as `make run` and the image do).
        if workers is not None and "--workers" not in self.args:
            self.args += ["--workers", str(workers)]
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.cwd = cwd
        env = {**BASE_SERVER_ENV, **(env or {})}
        self.api_key = api_key or env.get(BOOTSTRAP_API_KEY) or secrets.token_urlsafe(24)
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **env,
            BOOTSTRAP_API_KEY: self.api_key,
            "FACESVC_DATABASE_URL": database_url,
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / "server.stdout.log"
        self.stderr_path = log_dir / "server.stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.perf_counter() just before the process was spawned

    # -- lifecycle ---------------------------------------------------------------------------

    def migrate(self, timeout: float = 120) -> None:
        """``facesvc db upgrade`` on the server's database."""
        try:
            done = subprocess.run(
                [*facesvc_command(), "db", "upgrade"],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"`facesvc db upgrade` took more than {timeout:.0f}s") from exc
        if done.returncode != 0:
            raise ServerError(
                f"`facesvc db upgrade` exited with {done.returncode}:\n"
                f"{_tail(done.stdout + done.stderr)}"
            )

    def start(self) -> None:
        if self.process is not None:
            raise ServerError("the server is already started")
        command = [
            *facesvc_command(),
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.args,
        ]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdout=out, stderr=err
            )

    def stop(self, grace: float = 15) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code (0 = graceful)."""
        process = self.process
        if process is None:
            raise ServerError("the server was never started")
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> ServerProcess:
        self.migrate()
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.stop()

    # -- probes ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("the server was never started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended (0 = graceful), else None."""
        return None if self.process is None else self.process.poll()

    @property
    def headers(self) -> dict[str, str]:
        """What every request to this server sends: its admin API key."""
        return {API_KEY_HEADER: self.api_key}

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers=self.headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_for(self, path: str, timeout: float = 120, interval: float = 0.05) -> float:
        """Poll GET ``path`` until 200; seconds since the process was spawned."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if self.process is None:
                raise ServerError("the server was never started")
            code = self.process.poll()
            if code is not None:
                raise ServerError(
                    f"the server exited with {code} before GET {path} answered 200:\n"
                    f"{self.stderr_tail()}"
                )
            try:
                status, body = self.get(path)
            except OSError as exc:  # refused while uvicorn binds, or a timeout
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    return time.perf_counter() - self.started_at
                last = f"{status} {body[:300].decode(errors='replace')}"
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"GET {path} did not answer 200 within {timeout:.0f}s (last: {last}); "
                    f"server stderr:\n{self.stderr_tail()}"
                )
            time.sleep(interval)

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        """Wait for /livez then /readyz; the /readyz body."""
        deadline = time.monotonic() + timeout
        self.wait_for("/livez", timeout)
        self.wait_for("/readyz", max(deadline - time.monotonic(), 0.0), interval=0.1)
        body: dict[str, Any] = json.loads(self.get("/readyz")[1])
        return body

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no stderr captured)"
        return _tail(text, lines)

    def peak_rss_kib(self) -> int | None:
        """The server's peak resident set size so far (VmHWM), while it runs."""
        return proc_status_kib(self.pid, "VmHWM")


@contextmanager
def start_server(
    directory: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    api_key: str | None = None,
    database: Path | None = None,
    database_url: str | None = None,
    migrate: bool = True,
    wait: Literal["ready", "live"] = "ready",
    timeout: float = 180,
    grace: float = 15,
    workers: int | None = 1,
) -> Iterator[ServerProcess]:
    """A ``facesvc serve`` on a free port of 127.0.0.1, stopped (SIGTERM) when the block ends.

    Its database is ``database_url`` (e.g. PostgreSQL) or else the SQLite file ``database``
    (default ``directory/facesvc.db``), migrated first unless
    ``migrate`` is false; its logs go to ``directory``. It waits for /readyz (models loaded),
    or with ``wait="live"`` only for /livez. ``env``, ``api_key`` and ``workers`` as for
    ``ServerProcess``.
    ``ServerError`` if it cannot be migrated, started or made ready.
    """
    url = database_url or f"sqlite+aiosqlite:///{database or directory / 'facesvc.db'}"
    server = ServerProcess(url, directory, env=env, args=args, api_key=api_key, workers=workers)
    try:
        if migrate:
            server.migrate()
        server.start()
        if wait == "ready":
            server.wait_ready(timeout)
        else:
            server.wait_for("/livez", timeout)
        yield server
    finally:
        if server.process is not None:
            server.stop(grace)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"
