"""Real ``facesvc serve`` processes for the e2e and security tests.

Every server comes from ``start_server`` of ``server_process.py`` beside this (fresh SQLite
file, migrations, free port, its own admin API key, ``BASE_SERVER_ENV``), through ``serving``
here, which turns a failed start into a short test failure. Starting one loads every model
(about 10 s), so the tests that need no special settings share one per session: the
``live_server`` fixture.
Every request a test sends to a server carries ``server.headers`` (its ``X-API-Key``).
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server_process import ServerError, ServerProcess, start_server

# The shared server's admin key (also `live_server.api_key`): known before it starts, for
# module-level use.
LIVE_API_KEY = secrets.token_urlsafe(24)


@contextmanager
def serving(directory: Path, **options: Any) -> Iterator[ServerProcess]:
    """``start_server(directory, **options)``; a server that does not start fails the test."""
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_server(directory, **options))
        except ServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server


def http_client(server: ServerProcess, *, timeout: float = 60) -> httpx.Client:
    """An httpx client for ``server`` that sends its API key."""
    return httpx.Client(base_url=server.base_url, headers=server.headers, timeout=timeout)


def assert_stopped_cleanly(server: ServerProcess) -> None:
    """After SIGTERM: a graceful uvicorn shutdown, and no traceback in the whole log."""
    stderr = server.stderr_tail(80)
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so a clean stop
    # exits with 0 or -SIGTERM; SIGKILL after the grace period would be -9.
    code = server.returncode
    assert code in (0, -signal.SIGTERM), f"no clean stop on SIGTERM (exit {code}):\n{stderr}"
    assert "Application shutdown complete" in stderr, stderr
    assert "Finished server process" in stderr, stderr
    assert "Traceback" not in server.stderr_path.read_text(errors="replace"), stderr


@dataclass
class _Shared:
    stack: ExitStack
    server: ServerProcess
    users: int = field(default=0)


_SHARED = pytest.StashKey[_Shared]()


@pytest.fixture(scope="session")
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server for the whole session, with default settings and ``LIVE_API_KEY``.

    Each conftest that imports this fixture gets its own copy of it (pytest keys fixtures by
    directory), so the copies share the process through the session's stash: the first starts
    it, the last to finish stops it and checks that it stopped cleanly.
    """
    stash = request.config.stash
    shared = stash.get(_SHARED, None)
    if shared is None:
        stack = ExitStack()
        server = stack.enter_context(
            serving(
                tmp_path_factory.mktemp("live-server"),
                env={"FACESVC_LOG_LEVEL": "info"},  # the shutdown messages checked at the end
                api_key=LIVE_API_KEY,
            )
        )
        shared = stash[_SHARED] = _Shared(stack, server)
    shared.users += 1
    yield shared.server
    shared.users -= 1
    if shared.users == 0:
        del stash[_SHARED]
        shared.stack.close()
        assert_stopped_cleanly(shared.server)
