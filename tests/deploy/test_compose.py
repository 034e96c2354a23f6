"""docker-compose.yml (the file; tests/e2e/test_compose.py runs it): its services, the database
URL, the published port, the GPU profile, real settings and no literal secret."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from facesvc.settings import Settings
from tests.support.deploy_files import (
    BASE_IMAGE,
    COMPOSE,
    NGINX_CONF,
    ROOT,
)
from tests.support.parsers import (
    Instruction,
)

DB_URL = re.compile(
    r"^postgresql\+asyncpg://facesvc:\$\{POSTGRES_PASSWORD:\?[^}]+\}@db:5432/facesvc$"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}$")


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose["services"][name]
    return svc


def healthcheck_code(svc: dict[str, Any]) -> str:
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code: str = test[3]
    compile(code, "<healthcheck>", "exec")
    return code


def test_compose_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose spec has no version key"
    assert set(compose["services"]) == {"db", "migrate", "api", "api-gpu", "nginx"}


def test_compose_db(compose: dict[str, Any]) -> None:
    db = service(compose, "db")
    assert db["image"] == "${POSTGRES_IMAGE:-pgvector/pgvector:pg17}"  # official unless told
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volumes = [v.split(":")[0] for v in db["volumes"]]
    assert volumes, "the database needs a volume"
    assert all(v in compose["volumes"] for v in volumes), "use a named volume"


def test_compose_api_and_migrate(compose: dict[str, Any]) -> None:
    api, migrate = service(compose, "api"), service(compose, "migrate")
    assert api["build"]["context"] == "."
    assert api["build"]["args"]["PYTHON_IMAGE"] == f"${{PYTHON_IMAGE:-{BASE_IMAGE}}}"
    assert api["deploy"] == {"mode": "replicated", "replicas": 2}
    assert migrate["image"] == api["image"], "migrate must run the api's image"
    assert migrate["command"] == ["facesvc", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert api["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert "/readyz" in healthcheck_code(api)
    assert DB_URL.match(api["environment"]["FACESVC_DATABASE_URL"])
    assert api["environment"] == migrate["environment"]


def test_compose_publishes_only_nginx(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name != "nginx":
            assert "ports" not in svc, f"{name} publishes a port: only nginx may"
    nginx = service(compose, "nginx")
    assert nginx["image"] == "${NGINX_IMAGE:-nginx:1.27-alpine}"  # official unless told
    assert nginx["ports"] == ["${NGINX_PUBLISH:-127.0.0.1:8080}:80"]  # loopback unless told
    assert nginx["depends_on"] == {"api": {"condition": "service_healthy"}}
    source, target, mode = nginx["volumes"][0].split(":")
    assert (ROOT / source).resolve() == NGINX_CONF
    assert (target, mode) == ("/etc/nginx/nginx.conf", "ro")


def test_compose_gpu_profile(compose: dict[str, Any]) -> None:
    api, gpu = service(compose, "api"), service(compose, "api-gpu")
    assert gpu["profiles"] == ["gpu"]
    assert "profiles" not in api
    assert gpu["build"]["context"] == api["build"]["context"]
    assert gpu["build"]["args"]["TF_PACKAGE"] == "tensorflow[and-cuda]"
    assert gpu["image"] != api["image"], "the GPU image must not overwrite the CPU one"
    assert gpu["environment"]["FACESVC_DEVICE"] == "gpu:0"
    assert {k: v for k, v in gpu["environment"].items() if k != "FACESVC_DEVICE"} == {
        k: v for k, v in api["environment"].items() if k != "FACESVC_DEVICE"
    }
    assert gpu["depends_on"] == api["depends_on"]
    assert gpu["healthcheck"] == api["healthcheck"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_build_arg_matches_the_dockerfile(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    default = next(
        i.args.partition("=")[2]
        for i in dockerfile
        if i.keyword == "ARG" and i.args.startswith("TF_PACKAGE=")
    )
    assert service(compose, "api")["build"]["args"]["TF_PACKAGE"] == default


def test_compose_settings_are_real(compose: dict[str, Any], clean_env: None) -> None:
    """Every FACESVC_ variable of the stack is a Settings field, with a valid value."""
    for name in ("api", "api-gpu", "migrate"):
        env = service(compose, name)["environment"]
        values: dict[str, Any] = {}
        for key, value in env.items():
            if not key.startswith("FACESVC_"):
                continue
            field_name = key.removeprefix("FACESVC_").lower()
            assert field_name in Settings.model_fields, f"{name}: {key} is not a setting"
            if "${" not in str(value):
                values[field_name] = value
        Settings(_env_file=None, **values)


def walk_strings(node: Any) -> Iterator[tuple[str, str]]:
    """(key, value) for every string in the document, keys of mappings included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                yield str(key), value
            else:
                yield from walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, str):
                yield "", value
            else:
                yield from walk_strings(value)


def test_compose_has_no_literal_secret(compose: dict[str, Any]) -> None:
    for key, value in walk_strings(compose):
        if SECRET_NAME.search(key):
            assert value == "" or ENV_REFERENCE.match(value), f"{key}={value!r} is a literal"
        for match in re.finditer(r"://[^/:@\s]+:([^@\s]*)@", value):
            assert ENV_REFERENCE.match(match[1]), f"a literal password in {value!r}"
        bare = re.sub(r"\$\{[^}]*\}", "", value)  # interpolations are not literals
        assert not re.search(r"(?i)(password|secret|api_key|token)\s*[=:]\s*\S", bare), value
    text = COMPOSE.read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text, "the password must be required"
