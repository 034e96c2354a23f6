"""Which database backends the in-process tests run on."""

from __future__ import annotations

import os

import pytest

DATABASE_BACKENDS = ("sqlite", "postgresql", "pgvector")


def chosen_backends() -> list[str]:
    """FACESVC_TEST_BACKENDS (comma-separated; default: all three): `make test-fast` runs the
    inner loop on SQLite only. An unknown name is an error, not a silently smaller suite."""
    chosen = [
        b.strip() for b in os.environ.get("FACESVC_TEST_BACKENDS", "").split(",") if b.strip()
    ]
    unknown = sorted(set(chosen) - set(DATABASE_BACKENDS))
    if unknown:
        raise pytest.UsageError(
            f"FACESVC_TEST_BACKENDS: unknown {unknown}; known {DATABASE_BACKENDS}"
        )
    return chosen or list(DATABASE_BACKENDS)
