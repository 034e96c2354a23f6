"""The Dockerfile against the code and the Makefile: stages, the package install, the baked-in
models, the source layout, a non-root user, the health check and the commands the image runs.
Parsed, no Docker engine needed."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesvc.cli import app as cli_app
from tests.support.deploy_files import (
    BASE_IMAGE,
    MAKEFILE,
    ROOT,
)
from tests.support.parsers import (
    Instruction,
    env_of,
    exec_form,
    final_stage,
    run_commands,
)

APP_DIR = "/app"
SERVICE_UID = "10001"
SERVE_CMD = ["facesvc", "serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104


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
