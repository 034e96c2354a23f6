"""The console script as a user runs it: folder enrolment with a progress bar, users list,
benchmarks, clear errors and exit codes."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from facesvc.cli import app, bench
from facesvc.security.crypto import generate_data_key
from facesvc.settings import ENV_FILE_VARIABLE, PROJECT_ROOT, Settings
from tests.support.data import LFW, image_file, lfw_image, require_data
from tests.support.server_process import facesvc_command, free_port, start_server

pytestmark = pytest.mark.e2e


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*facesvc_command(), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_enrol_folder_then_list_users(tmp_path: Path) -> None:
    require_data()
    tree = tmp_path / "people"
    for name in ("Gray_Davis", "Hans_Blix", "Jean_Chretien"):
        (tree / name).mkdir(parents=True)
        for number in (1, 2, 3):
            shutil.copy(LFW / name / f"{name}_{number:04d}.jpg", tree / name)
    (tree / "Hans_Blix" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    env = {
        **os.environ,
        "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "FACESVC_ENCRYPTION_KEY": generate_data_key("cli"),
    }
    assert run(["db", "upgrade"], env).returncode == 0

    refused = run(["enrol", str(tree)], env)  # consent must be confirmed
    assert refused.returncode == 2
    assert "--consent" in refused.stderr
    no_key = run(["enrol", str(tree), "--consent"], {**env, "FACESVC_ENCRYPTION_KEY": ""})
    assert no_key.returncode != 0
    assert "FACESVC_ENCRYPTION_KEY" in no_key.stderr

    done = run(["enrol", str(tree), "--consent"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = re.search(
        r"3 people \(3 new users\), (\d+) faces enrolled, failed: (.*)", done.stdout
    )
    assert summary, done.stdout
    assert int(summary.group(1)) >= 7  # of 9 photos (one may hold two similar faces)
    assert "CorruptImageError: 1" in summary.group(2)

    listed = run(["users", "list"], env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "3 of 3 users" in listed.stdout
    assert "Hans Blix" in listed.stdout
    counts = [int(n) for n in re.findall(r"(\d+) faces", listed.stdout)]
    assert sum(counts) == int(summary.group(1))

    again = run(["enrol", str(tree), "--consent"], env)  # finds users by external_id
    assert "(0 new users)" in again.stdout


def test_cli_errors_have_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"}
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run(["enrol", str(empty), "--consent"], env)
    assert done.returncode == 2
    assert "no NAME/photo folders" in done.stderr
    missing = run(["enrol", str(tmp_path / "nope"), "--consent"], env)
    assert missing.returncode == 2
    assert run(["models", "pull", "no-such-model"], env).returncode == 2


def test_bench_list_names_every_benchmark_script() -> None:
    done = run(["bench", "list"], dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    listed = dict(line.split(None, 1) for line in done.stdout.splitlines())
    scripts = {p.stem for p in (PROJECT_ROOT / "bench").glob("*.py")} - {"naive_server"}
    assert set(listed) == scripts
    assert {"core_latency", "gallery_search", "http_load", "load_mixed"} <= scripts
    assert "1:N search" in listed["gallery_search"]
    assert all(summary.strip() for summary in listed.values()), listed


def test_bench_run_passes_arguments_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results" / "gallery_search.json"
    args = ["--sizes", "200", "--queries", "5", "--backends", "exact", "--out", str(out)]
    done = run(["bench", "run", "gallery_search", "--", *args], dict(os.environ))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "exact        200" in done.stdout  # the script's own table, streamed through
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["benchmark"] == "gallery_search"
    assert [(r["backend"], r["templates"]) for r in result["results"]] == [("exact", 200)]

    helped = run(["bench", "run", "gallery_search", "--", "--help"], dict(os.environ))
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "--sizes" in helped.stdout, "--help after -- must reach the script"


def test_bench_run_errors_have_exit_codes() -> None:
    unknown = run(["bench", "run", "nonexistent"], dict(os.environ))
    assert unknown.returncode == 2
    assert "no benchmark named 'nonexistent'" in unknown.stderr
    assert "gallery_search" in unknown.stderr, "the error lists the benchmarks"
    failing = run(["bench", "run", "gallery_search", "--", "--no-such-option"], dict(os.environ))
    assert failing.returncode == 2, "the script's own exit code (argparse: 2)"
    assert "unrecognized arguments: --no-such-option" in failing.stderr


def test_bench_outside_a_source_checkout_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As from an installed wheel: no bench/ beside the package.
    monkeypatch.setattr(bench, "PROJECT_ROOT", tmp_path)
    for args in (["bench", "list"], ["bench", "run", "gallery_search"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "no bench/ directory" in result.output


def test_keys_cli_creates_lists_revokes_and_rotates(tmp_path: Path) -> None:
    """`facesvc keys ...` against a real server: a created key works until revoked, and
    rotate-data moves every stored embedding to the new data key while it keeps matching."""
    require_data()
    old_key = generate_data_key("old")
    db = tmp_path / "keys.db"
    env = {
        **os.environ,
        "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "FACESVC_ENCRYPTION_KEY": old_key,
    }
    assert run(["db", "upgrade"], env).returncode == 0
    created = run(
        [
            "keys",
            "create",
            "--name",
            "ops",
            "--scope",
            "enrol",
            "--scope",
            "verify",
            "--tenant",
            "acme",
        ],
        env,
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("fsk_")
    assert "not shown again" in created.stderr
    listed = run(["keys", "list", "--tenant", "acme"], env)
    assert "ops" in listed.stdout
    assert secret not in listed.stdout
    key_id = listed.stdout.split()[0]
    assert run(["keys", "create", "--name", "x", "--scope", "root"], env).returncode == 2

    with start_server(tmp_path / "srv", database=db, env=env) as server:
        headers = {"X-API-Key": secret}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
            user = client.post("/v1/users", json={"name": "Hans Blix"}).json()
            enrolled = client.post(
                f"/v1/users/{user['id']}/faces",
                files=image_file(lfw_image("Hans_Blix", 1)),
                data={"consent": "true"},
            )
            assert enrolled.status_code == 201, enrolled.text
            assert client.get("/v1/keys").status_code == 403  # not an admin key

    sealed = list((tmp_path / "gallery-cache").glob("*.sealed"))  # the gallery, sealed on disk
    new_key = generate_data_key("new")
    rotated = run(
        ["keys", "rotate-data"], {**env, "FACESVC_ENCRYPTION_KEY": f"{new_key},{old_key}"}
    )
    assert rotated.returncode == 0, rotated.stderr[-2000:]
    assert "re-encrypted 1 faces under key 'new'" in rotated.stdout
    assert "new: 1 faces" in rotated.stdout
    assert not list((tmp_path / "gallery-cache").glob("*.sealed"))  # none left under "old"
    assert ("removed" in rotated.stdout) == bool(sealed)

    assert run(["keys", "revoke", key_id, "--tenant", "acme"], env).returncode == 0
    with start_server(
        tmp_path / "srv2", database=db, env={**env, "FACESVC_ENCRYPTION_KEY": new_key}
    ) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            refused = client.get("/v1/users", headers={"X-API-Key": secret})
            assert refused.status_code == 401  # revoked
            # the bootstrap key was not stored (a key already existed): use a new admin key
        admin = run(
            ["keys", "create", "--name", "root", "--scope", "admin", "--tenant", "acme"],
            {**env, "FACESVC_ENCRYPTION_KEY": new_key},
        ).stdout.strip()
        with httpx.Client(base_url=server.base_url, timeout=60, headers={"X-API-Key": admin}) as c:
            users = c.get("/v1/users").json()["items"]
            verified = c.post(
                f"/v1/users/{users[0]['id']}/verify", files=image_file(lfw_image("Hans_Blix", 2))
            ).json()
            assert verified["match"] is True  # decrypted under the new key only
            audit = c.get("/v1/audit", params={"action": "data.rotate"}).json()["items"]
            assert audit, "rotate-data is audited"


def test_server_refuses_to_start_without_a_data_key(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'nokey.db'}",
        "FACESVC_ENCRYPTION_KEY": "",
    }
    assert run(["db", "upgrade"], env).returncode == 0
    done = run(["serve", "--port", str(free_port())], env)
    assert done.returncode != 0
    assert "FACESVC_ENCRYPTION_KEY is not set" in done.stderr


@pytest.fixture
def developer_checkout(tmp_path: Path) -> Path:
    """A folder whose `.env` holds what `make run` writes into a checkout (a data key, an
    admin key) and a database of its own: settings no test may pick up unless it says so."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / ".env").write_text(
        f"FACESVC_ENCRYPTION_KEY={generate_data_key('dev')}\n"
        f"FACESVC_BOOTSTRAP_API_KEY={secrets.token_urlsafe(24)}\n"
        f"FACESVC_DATABASE_URL=sqlite+aiosqlite:///{folder / 'dev.db'}\n",
        encoding="utf-8",
    )
    return folder


def test_settings_in_tests_ignore_the_working_directorys_dotenv(
    developer_checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(developer_checkout)
    seen = Settings()
    assert seen.encryption_key is None
    assert seen.bootstrap_api_key is None
    assert "dev.db" not in seen.database_url
    # Without the harness's FACESVC_ENV_FILE= the same file is read: the checks above can fail.
    monkeypatch.delenv(ENV_FILE_VARIABLE)
    assert Settings().encryption_key is not None
    assert Settings(_env_file=None).encryption_key is None  # an explicit choice still wins


def test_cli_and_server_started_by_tests_ignore_a_dotenv(
    developer_checkout: Path, tmp_path: Path
) -> None:
    """`make run` then `make test` in one checkout: the CLI and the server, run from a folder
    whose `.env` holds a data key, still see only what the test set (here: no data key)."""
    require_data()
    tree = tmp_path / "people" / "Hans_Blix"
    tree.mkdir(parents=True)
    shutil.copy(LFW / "Hans_Blix" / "Hans_Blix_0001.jpg", tree)
    env = {**os.environ, "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'mine.db'}"}
    assert run(["db", "upgrade"], env, cwd=developer_checkout).returncode == 0
    assert (tmp_path / "mine.db").exists()
    assert not (developer_checkout / "dev.db").exists()

    no_key = run(["enrol", str(tree.parent), "--consent"], env, cwd=developer_checkout)
    assert no_key.returncode != 0, no_key.stdout
    assert "FACESVC_ENCRYPTION_KEY" in no_key.stderr

    # Had the server read the `.env`, it would start and serve: the run would time out.
    served = run(["serve", "--port", str(free_port())], env, cwd=developer_checkout)
    assert served.returncode != 0
    assert "FACESVC_ENCRYPTION_KEY is not set" in served.stderr
