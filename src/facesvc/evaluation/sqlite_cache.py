"""Rows an evaluation computed, kept in one SQLite file so reruns and other evaluations reuse them.

The embedding cache (``EmbeddingCache``) and the liveness evaluation's signal cache
(``SignalCache``) are this shape: a table created if missing, WAL so a reader never waits on
the writer, and rows written in batches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

Row = Sequence[Any]


class SqliteCache:
    """One SQLite file holding the table ``schema`` creates (if missing).

    ``write`` buffers a row for ``insert`` (a statement with one ``?`` per value); every
    ``flush_every`` rows, and on ``flush``/``close``, the buffered rows are committed together,
    so an interrupted run keeps almost all of its work. A file that is not an SQLite database
    raises ``sqlite3.DatabaseError`` here. Use from one thread.
    """

    def __init__(self, path: Path, schema: str, insert: str, *, flush_every: int = 200) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.flush_every = flush_every
        self._insert = insert
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(schema)
        self._db.commit()
        self._pending: list[Row] = []

    def read(self, query: str, parameters: Row = ()) -> sqlite3.Cursor:
        """The rows of ``query`` (what was committed; ``flush`` first to see buffered rows)."""
        return self._db.execute(query, parameters)

    def write(self, row: Row) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.executemany(self._insert, self._pending)
            self._db.commit()
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
