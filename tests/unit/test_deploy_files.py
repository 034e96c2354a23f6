"""The deployment files, checked against the code and against each other.

Dockerfile, .dockerignore, docker-compose.yml, nginx/nginx.conf and .env.example are parsed
here (no Docker engine needed, no models, no network). nginx/nginx.conf is also checked by
real nginx (``nginx -t``) when it is installed; under CI (``CI`` set) it must be.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from facesvc.cli import app as cli_app
from facesvc.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "nginx" / "nginx.conf"
ENV_EXAMPLE = ROOT / ".env.example"
MAKEFILE = ROOT / "Makefile"

BASE_IMAGE = "python:3.11-slim-bookworm"
APP_DIR = "/app"
SERVICE_UID = "10001"
SERVE_CMD = ["facesvc", "serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104
DB_URL = re.compile(
    r"^postgresql\+asyncpg://facesvc:\$\{POSTGRES_PASSWORD:\?[^}]+\}@db:5432/facesvc$"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}$")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FACESVC_* variable from the caller's environment, and the repo root as cwd."""
    for name in list(os.environ):
        if name.startswith("FACESVC_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT)


def default_settings() -> Settings:
    return Settings(_env_file=None)


# ---------------------------------------------------------------------------------------------
# Dockerfile


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """``COPY --from=build /a /b`` -> ({"from": "build"}, "/a /b")."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, each tagged with
    the index of its build stage (-1 before the first FROM)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # Docker drops comment lines, even inside a continued instruction
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def shell_commands(script: str) -> list[list[str]]:
    """A shell line split into simple commands at &&, ||, ;, | (quotes respected)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    assert all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in dockerfile)
    return [i for i in dockerfile if i.stage == last]


def run_commands(dockerfile: list[Instruction], stage: int | None = None) -> list[list[str]]:
    return [
        command
        for i in dockerfile
        if i.keyword == "RUN" and (stage is None or i.stage == stage)
        for command in shell_commands(i.args)
    ]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV":
            for token in shlex.split(i.args):
                name, sep, value = token.partition("=")
                assert sep, f"use ENV NAME=value, not the legacy form: ENV {i.args}"
                env[name] = value
    return env


def test_dockerfile_is_multi_stage_on_slim_python(dockerfile: list[Instruction]) -> None:
    bases = [i.args.split()[0] for i in dockerfile if i.keyword == "FROM"]
    assert len(bases) >= 2, "expected a build stage and a runtime stage"
    # one base, a build argument whose default is the official image (a stand-in or a
    # mirror is passed with --build-arg PYTHON_IMAGE=..., see scripts/local-base-images.sh)
    assert set(bases) == {"${PYTHON_IMAGE}"}
    args = [i.args for i in dockerfile if i.keyword == "ARG" and i.stage < 0]
    assert f"PYTHON_IMAGE={BASE_IMAGE}" in args, args
    copies_from_build = [
        i
        for i in final_stage(dockerfile)
        if i.keyword == "COPY" and "from" in i.flags_and_rest()[0]
    ]
    assert copies_from_build, "the runtime stage copies nothing from the build stage"


def test_dockerfile_installs_the_package_like_the_makefile(dockerfile: list[Instruction]) -> None:
    make_install = next(
        shlex.split(line.strip())
        for line in MAKEFILE.read_text(encoding="utf-8").splitlines()
        if "pip install" in line and " -e " in line
    )
    editable = make_install[make_install.index("-e") + 1]  # '.[dev]'
    project = editable.split("[")[0]
    installs = [c for c in run_commands(dockerfile) if c[:4] == ["python", "-m", "pip", "install"]]
    editables = [c[c.index("-e") + 1] for c in installs if "-e" in c]
    assert editables, "the Dockerfile has no `python -m pip install -e` (the Makefile's command)"
    for target in editables:
        assert target.split("[")[0] == project
        assert "dev" not in target, "the image does not need the dev extras"


def test_dockerfile_tf_package_build_arg(dockerfile: list[Instruction]) -> None:
    args = {
        name: value
        for i in dockerfile
        if i.keyword == "ARG"
        for name, _, value in [i.args.partition("=")]
    }
    assert args.get("TF_PACKAGE") == "tensorflow"
    installs = [c for c in run_commands(dockerfile) if c[:4] == ["python", "-m", "pip", "install"]]
    assert any("${TF_PACKAGE}" in c for c in installs), "TF_PACKAGE is never installed"


def test_dockerfile_bakes_verified_models_in(dockerfile: list[Instruction]) -> None:
    build_stage = max(i.stage for i in dockerfile) - 1
    commands = run_commands(dockerfile, build_stage)
    assert ["facesvc", "models", "pull"] in commands
    assert ["facesvc", "models", "list"] in commands, "the pulled models are not listed/checked"
    manifest_copied = next(
        n
        for n, i in enumerate(dockerfile)
        if i.keyword == "COPY" and "models/manifest.json" in i.args
    )
    pulled = next(
        n for n, i in enumerate(dockerfile) if i.keyword == "RUN" and "models pull" in i.args
    )
    assert manifest_copied < pulled
    flags_rest = [i.flags_and_rest() for i in final_stage(dockerfile) if i.keyword == "COPY"]
    assert ({"from": "build"}, f"{APP_DIR} {APP_DIR}") in flags_rest


def copy_destinations(dockerfile: list[Instruction], stage: int) -> dict[str, str]:
    """Source path -> absolute path in the image, for the stage's COPYs from the context."""
    workdir = "/"
    found: dict[str, str] = {}
    for i in dockerfile:
        if i.stage != stage:
            continue
        if i.keyword == "WORKDIR":
            workdir = i.args if i.args.startswith("/") else f"{workdir.rstrip('/')}/{i.args}"
        if i.keyword != "COPY":
            continue
        flags, rest = i.flags_and_rest()
        if "from" in flags:
            continue
        *sources, dest = rest.split()
        base = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
        for source in sources:
            is_dir = (ROOT / source).is_dir()
            if is_dir or not (dest.endswith("/") or dest in {".", "./"}):
                target = base  # a folder's contents go into dest; a file is renamed to dest
            else:
                target = f"{base.rstrip('/')}/{Path(source).name}"
            found[source.rstrip("/")] = os.path.normpath(target)
    return found


def test_dockerfile_keeps_the_source_layout(dockerfile: list[Instruction]) -> None:
    """facesvc finds alembic/ and models/ from its source tree (PROJECT_ROOT = parents[2] of
    src/facesvc/settings.py), so the image must keep the repo's layout under one folder."""
    build_stage = max(i.stage for i in dockerfile) - 1
    copied = copy_destinations(dockerfile, build_stage)
    for path in ("pyproject.toml", "alembic.ini", "alembic", "src", "models/manifest.json"):
        assert copied.get(path) == f"{APP_DIR}/{path}", f"{path} -> {copied.get(path)}"
    workdirs = [i.args for i in final_stage(dockerfile) if i.keyword == "WORKDIR"]
    assert workdirs[-1] == APP_DIR, "relative settings (sqlite:///var/...) resolve from /app"


def test_dockerfile_runs_as_non_root_with_healthcheck(dockerfile: list[Instruction]) -> None:
    stage = final_stage(dockerfile)
    users = [i.args for i in stage if i.keyword == "USER"]
    assert users, "no USER: the service would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    if user != SERVICE_UID:
        useradd = [c for c in run_commands(dockerfile) if c[0] == "useradd" and c[-1] == user]
        assert useradd, f"USER {user} is not created with useradd"
        assert "--uid" in useradd[0]
        assert useradd[0][useradd[0].index("--uid") + 1] == SERVICE_UID
    assert [i.args for i in stage if i.keyword == "EXPOSE"] == ["8000"]

    healthchecks = [i for i in stage if i.keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    _, probe = healthchecks[0].flags_and_rest()
    keyword, _, command = probe.partition(" ")
    assert keyword == "CMD"
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"], "slim images have no curl: probe with python"
    compile(argv[2], "<healthcheck>", "exec")
    assert "/livez" in argv[2]

    cmds = [i.args for i in stage if i.keyword == "CMD"]
    assert exec_form(cmds[-1]) == SERVE_CMD
    env = env_of(stage)
    assert env["FACESVC_HOST"] == "0.0.0.0"  # noqa: S104
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"


@pytest.mark.parametrize(
    "argv",
    [["serve", "--help"], ["db", "upgrade", "--help"], ["models", "pull", "--help"]],
)
def test_commands_of_the_image_exist(argv: list[str]) -> None:
    result = CliRunner().invoke(cli_app, argv)
    assert result.exit_code == 0, result.output
    if argv[0] == "serve":
        assert "--host" in result.output
        assert "--port" in result.output


# ---------------------------------------------------------------------------------------------
# .dockerignore


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per line: Go filepath.Match, plus ``**`` for any folders."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


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


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


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


# ---------------------------------------------------------------------------------------------
# .env.example

ENV_LINE = re.compile(r"^(#\s*)?FACESVC_([A-Z0-9_]+)=(.*)$")


@dataclass
class EnvEntry:
    value: str
    commented: bool
    comment: str
    count: int = field(default=1)


@pytest.fixture(scope="module")
def env_example() -> dict[str, EnvEntry]:
    entries: dict[str, EnvEntry] = {}
    previous = ""
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line)
        if match:
            name = match[2].lower()
            if name in entries:
                entries[name].count += 1
            else:
                comment = previous.removeprefix("#").strip() if previous.startswith("#") else ""
                entries[name] = EnvEntry(match[3], bool(match[1]), comment)
        previous = line
    return entries


def test_env_example_lists_every_setting_once(env_example: dict[str, EnvEntry]) -> None:
    assert set(env_example) == set(Settings.model_fields)
    for name, entry in env_example.items():
        assert entry.count == 1, f"FACESVC_{name.upper()} appears {entry.count} times"


def test_env_example_explains_every_setting(env_example: dict[str, EnvEntry]) -> None:
    for name, info in Settings.model_fields.items():
        comment = env_example[name].comment
        assert comment, f"FACESVC_{name.upper()} has no comment line above it"
        if info.description:
            assert comment.startswith(info.description), f"{name}: {comment!r}"


@pytest.mark.parametrize("secret", ["bootstrap_api_key", "encryption_key"])
def test_env_example_secret_is_empty(env_example: dict[str, EnvEntry], secret: str) -> None:
    entry = env_example[secret]
    assert entry.value == ""
    assert not entry.commented


def effective(settings: Settings) -> dict[str, Any]:
    """The values that decide behaviour, with paths resolved from the working directory."""
    values = settings.model_dump()
    url = make_url(settings.database_url)
    assert url.database
    values["database_url"] = url.set(database=str(Path(url.database).resolve()))
    for name, value in values.items():
        if isinstance(value, Path):
            values[name] = value.resolve()
    values["model_manifest"] = settings.manifest_path.resolve()
    values["bootstrap_api_key"] = settings.bootstrap_api_key or None
    values["encryption_key"] = settings.encryption_key or None
    return values


def test_env_example_loads_to_the_defaults(
    env_example: dict[str, EnvEntry], clean_env: None
) -> None:
    loaded = Settings(_env_file=ENV_EXAMPLE)
    assert effective(loaded) == effective(default_settings())
    # A commented-out key is one whose default is "unset"; its example value, uncommented,
    # must mean the same as leaving it unset.
    commented = {n for n, e in env_example.items() if e.commented}
    assert commented == {n for n, f in Settings.model_fields.items() if f.default is None} - {
        "bootstrap_api_key",
        "encryption_key",
    }
    examples: dict[str, Any] = {name: env_example[name].value for name in commented}
    uncommented = Settings(_env_file=None, **examples)
    assert uncommented.manifest_path.resolve() == default_settings().manifest_path.resolve()
    manifest = json.loads(default_settings().manifest_path.read_text(encoding="utf-8"))
    embedder = manifest["models"][default_settings().embedder]
    assert uncommented.match_threshold == embedder["threshold"]
    from sqlalchemy.engine import make_url

    from facesvc.gallery.sealed import cache_folder

    beside = cache_folder(None, make_url(default_settings().database_url).database)
    assert uncommented.gallery_cache_dir is not None
    assert beside is not None
    assert uncommented.gallery_cache_dir.resolve() == beside.resolve()


def test_env_example_relative_sqlite_url_is_from_the_working_dir(
    env_example: dict[str, EnvEntry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite+aiosqlite:///var/facesvc.db is relative: the engine creates var/ in the cwd."""
    from facesvc.db.engine import ensure_sqlite_parent

    monkeypatch.chdir(tmp_path)
    url = env_example["database_url"].value
    ensure_sqlite_parent(url)
    assert (tmp_path / "var").is_dir()


# ---------------------------------------------------------------------------------------------
# nginx/nginx.conf


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]


def parse_nginx(text: str) -> Directive:
    """A small nginx config parser: directives, arguments (quotes kept out), blocks."""
    pieces = re.findall(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|#[^\n]*|[{};]|[^\s{};'"#]+""", text)
    root = Directive("main", [], [])
    stack = [root]
    words: list[str] = []
    for piece in pieces:
        if piece.startswith("#"):
            continue
        if piece in {";", "{"}:
            directive = Directive(words[0], words[1:], [] if piece == "{" else None)
            assert stack[-1].block is not None
            stack[-1].block.append(directive)
            if piece == "{":
                stack.append(directive)
            words = []
        elif piece == "}":
            assert not words, f"missing ';' after {words}"
            stack.pop()
        else:
            words.append(piece[1:-1] if piece[0] in "'\"" else piece)
    assert len(stack) == 1, "unbalanced braces"
    assert not words, f"missing ';' after {words}"
    return root


def nginx_size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    match = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert match, value
    return int(match[1]) * units[match[2]]


@pytest.fixture(scope="module")
def nginx() -> Directive:
    return parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nginx_server(nginx: Directive) -> Directive:
    (http,) = nginx.find("http")
    (server,) = http.find("server")
    return server


def choose_location(server: Directive, path: str) -> Directive:
    """The location nginx picks for a URI: exact, else regexes over the longest prefix
    (unless it is ^~), else the longest prefix."""
    locations = [d for d in server.find("location") if not d.args[0].startswith("@")]
    for loc in locations:
        if loc.args[0] == "=" and loc.args[1] == path:
            return loc
    prefixes = [
        loc
        for loc in locations
        if (len(loc.args) == 1 or loc.args[0] == "^~") and path.startswith(loc.args[-1])
    ]
    longest = max(prefixes, key=lambda loc: len(loc.args[-1]), default=None)
    if longest is None or longest.args[0] != "^~":
        for loc in locations:
            if loc.args[0] in {"~", "~*"}:
                flags = re.IGNORECASE if loc.args[0] == "~*" else 0
                if re.search(loc.args[1], path, flags):
                    return loc
    assert longest is not None, f"no location for {path}"
    return longest


def test_nginx_accepts_the_largest_upload(nginx_server: Directive) -> None:
    (directive,) = nginx_server.find("client_max_body_size")
    limit = nginx_size(directive.args[0])
    assert limit >= Settings.model_fields["max_upload_bytes"].default


def test_nginx_proxies_to_the_api_without_a_keepalive_pool(
    nginx: Directive, nginx_server: Directive
) -> None:
    (http,) = nginx.find("http")
    (upstream,) = http.find("upstream")
    assert [d.args for d in upstream.find("server")] == [["api:8000"]]
    # a pooled connection to a replica that is stopping turns a POST into a 502 (measured in
    # tests/e2e/test_compose.py); fresh connections are refused and retried on the other one
    assert not upstream.find("keepalive")
    assert [d.args for d in nginx_server.find("listen")] == [["80"]]
    assert nginx_server.find("proxy_http_version")[0].args == ["1.1"]
    headers = {d.args[0].lower(): d.args[1] for d in nginx_server.find("proxy_set_header")}
    assert headers["connection"] == "close"
    for name in ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-request-id"):
        assert name in headers, f"proxy_set_header {name} missing"
    for name in ("proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout"):
        assert nginx_server.find(name), f"{name} missing"
    for loc in nginx_server.find("location"):
        if not loc.args[0].startswith("@"):
            assert loc.find("proxy_pass")[0].args == [f"http://{upstream.args[0]}"]
            assert not loc.find("proxy_set_header"), "would drop the server's proxy_set_header"


def test_nginx_rate_limits_the_api_but_not_the_probes(
    nginx: Directive, nginx_server: Directive
) -> None:
    from facesvc.app import create_app

    (http,) = nginx.find("http")
    zones = {
        arg.split("=", 1)[1].split(":")[0]
        for zone in http.find("limit_req_zone")
        for arg in zone.args
        if arg.startswith("zone=")
    }
    assert zones
    assert http.find("limit_req_status")[0].args == ["429"]

    schema = create_app(default_settings()).openapi()
    paths = {re.sub(r"\{[^}]+\}", "x", path) for path in schema["paths"]}
    assert {"/livez", "/readyz", "/v1/detect", "/face_login"} <= paths
    for path in sorted(paths):
        limits = choose_location(nginx_server, path).find("limit_req")
        if path in {"/livez", "/readyz"}:
            assert not limits, f"{path} is a probe: no rate limit"
        else:
            assert limits, f"{path} is not rate limited"
            assert any(a.startswith("zone=") and a[5:] in zones for a in limits[0].args)
            assert any(a.startswith("burst=") for a in limits[0].args)


# POSTs that store nothing but an audit row (verify: and a failed-attempt count): the only
# ones nginx may send to a second replica when the first went away before answering.
RETRYABLE_POSTS = {
    "/v1/detect",
    "/v1/landmarks",
    "/v1/embed",
    "/v1/identify",
    "/v1/compare",
    "/v1/users/x/verify",
    "/face_detect",
    "/face_landmark",
    "/face_login",
    "/upload",
}


def test_nginx_retries_only_posts_that_store_nothing(nginx_server: Directive) -> None:
    from facesvc.app import create_app

    schema = create_app(default_settings()).openapi()
    posts = {re.sub(r"\{[^}]+\}", "x", p) for p, ops in schema["paths"].items() if "post" in ops}
    assert posts >= RETRYABLE_POSTS
    for path in sorted(posts):
        retry = choose_location(nginx_server, path).find("proxy_next_upstream")
        retried = bool(retry) and "non_idempotent" in retry[0].args
        assert retried == (path in RETRYABLE_POSTS), path


def test_nginx_errors_are_problem_json(nginx_server: Directive) -> None:
    pages = {d.args[0]: d.args[-1] for d in nginx_server.find("error_page")}
    assert {"413", "429"} <= set(pages)
    named = {d.args[0]: d for d in nginx_server.find("location") if d.args[0].startswith("@")}
    for status, target in pages.items():
        location = named[target]
        assert location.find("default_type")[0].args == ["application/problem+json"]
        (ret,) = location.find("return")
        assert ret.args[0] == status
        body = json.loads(ret.args[1].replace("\\n", ""))
        assert body["status"] == int(status)
        assert {"type", "title"} <= set(body)


# --- real nginx ------------------------------------------------------------------------------

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render_nginx_conf(directory: Path, upstream: str, listen: str) -> Path:
    """nginx/nginx.conf with its environment-specific values replaced: the upstream address,
    the listen address and every file path (pid, logs, temp folders, all under directory)."""
    text = NGINX_CONF.read_text(encoding="utf-8")

    def sub(pattern: str, replace: Callable[[re.Match[str]], str], count: int) -> None:
        nonlocal text
        text, done = re.subn(pattern, replace, text, flags=re.MULTILINE)
        assert done == count, f"{pattern!r} matched {done} times, expected {count}"

    sub(r"^(\s*server\s+)api:8000;", lambda m: f"{m[1]}{upstream};", 1)
    sub(r"^(\s*listen\s+)80;", lambda m: f"{m[1]}{listen};", 1)
    sub(r"^(\s*pid\s+)\S+;", lambda m: f"{m[1]}{directory / 'nginx.pid'};", 1)
    sub(r"^(\s*error_log\s+)\S+", lambda m: f"{m[1]}{directory / 'error.log'}", 1)
    sub(r"^(\s*access_log\s+)(?!off;)\S+", lambda m: f"{m[1]}{directory / 'access.log'}", 1)
    sub(
        r"^(\s*(\w+)_temp_path\s+)\S+;",
        lambda m: f"{m[1]}{directory / (m[2] + '_temp')};",
        len(TEMP_PATHS),
    )
    code = "\n".join(line.split("#")[0] for line in text.splitlines()).replace(str(directory), "")
    for leftover in ("/var/", "/etc/", "/run/", "api:8000"):
        assert leftover not in code, f"{leftover} is still in the rendered config"
    conf = directory / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found is None:
        message = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required under CI", pytrace=False)
        pytest.skip(message)
    return found


def test_real_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = nginx_binary()
    conf = render_nginx_conf(tmp_path, upstream="127.0.0.1:18000", listen="127.0.0.1:18080")
    result = subprocess.run(
        [binary, "-t", "-c", str(conf), "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test is successful" in output
    for name in TEMP_PATHS:
        assert (tmp_path / f"{name}_temp").is_dir()
