"""The e2e tests' fixtures: the shared real server (``live_server``, tests/support/servers.py) and
the external tools some tests drive (a browser, nginx, node)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.servers import LIVE_API_KEY, live_server

__all__ = ["LIVE_API_KEY", "live_server", "require_tool"]


def require_tool(name: str, *candidates: str, install: str) -> str:
    """The path of an executable, else skip (or fail under CI, where it must be installed)."""
    found = shutil.which(name) or next((c for c in candidates if Path(c).is_file()), None)
    if found is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required under CI", pytrace=False)
        pytest.skip(message)
    return found
