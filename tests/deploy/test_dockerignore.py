"""The .dockerignore keeps the build context to what the Dockerfile copies (Docker's matching
rules, tests/support/parsers.py)."""

from __future__ import annotations

import pytest

from tests.support.deploy_files import (
    ROOT,
)
from tests.support.parsers import (
    Instruction,
    dockerignore_rules,
    dockerignored,
)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("pyproject.toml", False),
        ("alembic.ini", False),
        ("alembic/env.py", False),
        ("src/facesvc/settings.py", False),
        ("models/manifest.json", False),
        ("models/calibration/facenet.json", False),
        ("models/facenet_128.pb", True),
        ("models/face_landmark.tflite", True),
        ("models/.cache/dist/x.whl", True),
        ("models/.state/facenet.json", True),
        (".venv/bin/python", True),
        (".cache/pip/x", True),
        (".git/HEAD", True),
        ("var/facesvc.db", True),
        (".env", True),
        ("src/facesvc/__pycache__/app.cpython-311.pyc", True),
        (".pytest_cache/v/cache/lastfailed", True),
        ("tests/conftest.py", True),
    ],
)
def test_dockerignore(path: str, ignored: bool) -> None:
    assert dockerignored(path, dockerignore_rules()) is ignored


def test_dockerfile_sources_are_in_the_build_context(dockerfile: list[Instruction]) -> None:
    rules = dockerignore_rules()
    for i in dockerfile:
        flags, rest = i.flags_and_rest()
        if i.keyword != "COPY" or "from" in flags:
            continue
        for source in rest.split()[:-1]:
            if any(c in source for c in "*?["):
                continue  # an optional file (README.md*)
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not dockerignored(source, rules), f"COPY {source}: excluded by .dockerignore"
