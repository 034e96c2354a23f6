"""One real ``facesvc serve`` process shared by the client, browser and nginx tests.

Starting a server loads every model (seconds of CPU), so these modules share one per
session, on its own SQLite file; each test uses its own LFW people, so they do not interfere.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from facesvc.testing import ServerError, ServerProcess

# Not enforced yet; sent anyway, so these tests keep working once keys are.
LIVE_API_KEY = secrets.token_urlsafe(24)


def require_tool(name: str, *candidates: str, install: str) -> str:
    """The path of an executable, else skip (or fail under CI, where it must be installed)."""
    found = shutil.which(name) or next((c for c in candidates if Path(c).is_file()), None)
    if found is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required under CI", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("live-server")
    server = ServerProcess(
        f"sqlite+aiosqlite:///{tmp / 'facesvc.db'}",
        tmp,
        env={"FACESVC_BOOTSTRAP_API_KEY": LIVE_API_KEY},
    )
    try:
        server.migrate()
        server.start()
        server.wait_ready(timeout=180)
    except ServerError as exc:
        if server.process is not None:
            server.stop()
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop(grace=15)
