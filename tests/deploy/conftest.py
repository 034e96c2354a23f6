"""The deploy tests' fixtures: each deployment file parsed (once per module), and an environment
with no FACESVC_* variable, in the repository root."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from tests.support.deploy_files import (
    COMPOSE,
    DOCKERFILE,
    ENV_EXAMPLE,
    NGINX_CONF,
    ROOT,
)
from tests.support.parsers import (
    Directive,
    EnvEntry,
    Instruction,
    parse_dockerfile,
    parse_env_example,
    parse_nginx,
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FACESVC_* variable from the caller's environment, and the repo root as cwd."""
    for name in list(os.environ):
        if name.startswith("FACESVC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, EnvEntry]:
    return parse_env_example(ENV_EXAMPLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nginx() -> Directive:
    return parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nginx_server(nginx: Directive) -> Directive:
    (http,) = nginx.find("http")
    (server,) = http.find("server")
    return server
