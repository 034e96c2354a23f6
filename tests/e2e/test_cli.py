"""The console script as a user runs it: folder enrolment with a progress bar, users list,
clear errors and exit codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from facesvc.testing import facesvc_command
from tests.conftest import LFW, require_data

pytestmark = pytest.mark.e2e


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*facesvc_command(), *args],
        env=env,
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
    env = {**os.environ, "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    assert run(["db", "upgrade"], env).returncode == 0

    done = run(["enrol", str(tree)], env)
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

    again = run(["enrol", str(tree)], env)  # finds the users by external_id, adds photos
    assert "(0 new users)" in again.stdout


def test_cli_errors_have_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "FACESVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"}
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run(["enrol", str(empty)], env)
    assert done.returncode == 2
    assert "no NAME/photo folders" in done.stderr
    missing = run(["enrol", str(tmp_path / "nope")], env)
    assert missing.returncode == 2
    assert run(["models", "pull", "no-such-model"], env).returncode == 2
