"""The security tests' fixtures: the shared real server (``live_server``, see tests/servers.py)."""

from __future__ import annotations

from tests.servers import live_server

__all__ = ["live_server"]
