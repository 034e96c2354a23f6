"""The security tests' fixtures: the shared real server (``live_server``, in
tests/support/servers.py)."""

from __future__ import annotations

from tests.support.servers import live_server

__all__ = ["live_server"]
