"""`facesvc keys init-env | generate | gen-data-key`: fresh secrets, never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesvc.cli import app
from facesvc.security.crypto import EmbeddingCipher, parse_data_keys


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("FACESVC_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("FACESVC_BOOTSTRAP_API_KEY", raising=False)
    return CliRunner()


def read_env(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_init_env_writes_fresh_private_secrets_once(runner: CliRunner, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("FACESVC_PORT=8001", encoding="utf-8")  # no trailing newline
    first = runner.invoke(app, ["keys", "init-env", "--file", str(env)])
    assert first.exit_code == 0, first.output
    values = read_env(env)
    assert values["FACESVC_PORT"] == "8001"
    assert values["FACESVC_BOOTSTRAP_API_KEY"].startswith("fsk_")
    assert values["FACESVC_BOOTSTRAP_API_KEY"] in first.output  # shown once to the operator
    [key] = parse_data_keys(values["FACESVC_ENCRYPTION_KEY"]).values()
    assert len(key) == 32
    before = env.read_text(encoding="utf-8")
    again = runner.invoke(app, ["keys", "init-env", "--file", str(env)])
    assert again.exit_code == 0
    assert env.read_text(encoding="utf-8") == before  # never overwritten

    fresh = tmp_path / "new.env"
    assert runner.invoke(app, ["keys", "init-env", "--file", str(fresh)]).exit_code == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert read_env(fresh)["FACESVC_BOOTSTRAP_API_KEY"] != values["FACESVC_BOOTSTRAP_API_KEY"]


def test_generated_keys_are_random_and_usable(runner: CliRunner) -> None:
    keys = {runner.invoke(app, ["keys", "generate"]).output.strip() for _ in range(3)}
    assert len(keys) == 3
    assert all(k.startswith("fsk_") and len(k) >= 40 for k in keys)
    data_key = runner.invoke(app, ["keys", "gen-data-key", "--id", "k2026"]).output.strip()
    cipher = EmbeddingCipher.from_setting(data_key)
    assert cipher.active_key_id == "k2026"
    assert runner.invoke(app, ["keys", "gen-data-key", "--id", "bad id!"]).exit_code == 2
