"""The SQLite file behind the evaluation caches (facesvc.evaluation.sqlite_cache): rows written
in batches come back, a second open sees them, and a file that is not the cache's is handled as
the two caches always handled it (a corrupt one refused, another database's tables left alone)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facesvc.evaluation.cache import CachedFace, EmbeddingCache
from facesvc.evaluation.liveness.signals import PhotoSignals, SignalCache
from facesvc.evaluation.sqlite_cache import SqliteCache

SCHEMA = "CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, value REAL, blob BLOB)"
INSERT = "INSERT OR REPLACE INTO items VALUES (?, ?, ?)"
SELECT = "SELECT key, value, blob FROM items ORDER BY key"


def open_cache(path: Path, flush_every: int = 200) -> SqliteCache:
    return SqliteCache(path, SCHEMA, INSERT, flush_every=flush_every)


def test_rows_round_trip_and_a_second_open_sees_them(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "cache.sqlite"  # the folder is made
    with open_cache(path) as cache:
        cache.write(("a", 1.5, b"\x00\x01"))
        cache.write(("b", None, None))
        cache.write(("a", 2.5, b"\x02"))  # replaces the first row of its key
        assert list(cache.read(SELECT)) == []  # buffered: not committed yet
        cache.flush()
        assert list(cache.read(SELECT)) == [("a", 2.5, b"\x02"), ("b", None, None)]
    with open_cache(path) as again:
        assert list(again.read(SELECT)) == [("a", 2.5, b"\x02"), ("b", None, None)]
        assert list(again.read("SELECT value FROM items WHERE key = ?", ("b",))) == [(None,)]


def test_every_flush_every_rows_are_committed_while_open(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = open_cache(path, flush_every=2)
    try:
        cache.write(("a", 1.0, None))
        reader = sqlite3.connect(path)
        assert reader.execute("SELECT count(*) FROM items").fetchone() == (0,)
        cache.write(("b", 2.0, None))  # the second row commits both: an interruption keeps them
        assert reader.execute("SELECT count(*) FROM items").fetchone() == (2,)
        reader.close()
    finally:
        cache.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    "make",
    [
        lambda path: open_cache(path),
        lambda path: EmbeddingCache(path, "det", "emb"),
        lambda path: SignalCache(path, "pipeline"),
    ],
    ids=["sqlite_cache", "embedding_cache", "signal_cache"],
)
def test_a_file_that_is_not_a_database_is_refused_and_left_as_it_was(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    path = tmp_path / "cache.sqlite"
    garbage = b"not an SQLite file " * 64
    path.write_bytes(garbage)
    with pytest.raises(sqlite3.DatabaseError, match="file is not a database"):
        make(path)
    assert path.read_bytes() == garbage


def test_another_databases_tables_are_kept_beside_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes (text TEXT)")
    other.execute("INSERT INTO notes VALUES ('kept')")
    other.commit()
    other.close()
    with EmbeddingCache(path, "det", "emb") as cache:
        cache.put(tmp_path / "a.jpg", CachedFace(np.array([0.6, 0.8], np.float32), 1))
    with SignalCache(path, "pipeline") as signals:
        signals.put(PhotoSignals("Person/Person_0001.jpg", 0))
    with EmbeddingCache(path, "det", "emb") as cache:
        found = cache.get_many([tmp_path / "a.jpg"])
    assert found[tmp_path / "a.jpg"].faces == 1
    with SignalCache(path, "pipeline") as signals:
        (photo,) = signals.get_all().values()
    assert (photo.name, photo.faces, photo.found) == ("Person/Person_0001.jpg", 0, False)
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert sorted(name for (name,) in tables) == ["embeddings", "notes", "signals"]
    assert sqlite3.connect(path).execute("SELECT text FROM notes").fetchall() == [("kept",)]


def test_a_table_of_the_same_name_and_another_shape_fails_on_use(tmp_path: Path) -> None:
    path = tmp_path / "clash.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE embeddings (x)")
    other.commit()
    other.close()
    cache = EmbeddingCache(path, "det", "emb")  # CREATE TABLE IF NOT EXISTS: no error yet
    with pytest.raises(sqlite3.OperationalError, match="no such column: path"):
        cache.get_many([tmp_path / "a.jpg"])
    cache.put(tmp_path / "a.jpg", CachedFace(None, 0))
    with pytest.raises(sqlite3.OperationalError, match="has no column named path"):
        cache.close()
