""".env.example lists every setting once, explains each, leaves secrets empty and loads to the
defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from facesvc.settings import Settings
from tests.support.deploy_files import (
    ENV_EXAMPLE,
    default_settings,
)
from tests.support.parsers import (
    EnvEntry,
)


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
