"""The embedded gallery's snapshot kept on disk, sealed under the active data key, so that a
restart decrypts one file in bulk instead of every face row in Python (and keeps its IVF cells).

File ``facesvc-gallery-<instance>-<model>.sealed`` in the cache folder (0700, files 0600):

- ``FSVCSEAL`` + header length (8 bytes, little endian) + a JSON header: format, instance,
  model, dim, gallery version, IVF cells, key id, chunk size, number of chunks, plaintext size;
- then each chunk: its sealed length (4 bytes) + nonce (12) + AES-256-GCM ciphertext + tag, of
  up to 32 MiB of the snapshot file's bytes (facesvc.gallery.snapshot.write_snapshot).

Every chunk's associated data is SHA-256(header) + the chunk's index: a changed header (model,
version, dimension, key id, chunk count) fails every chunk, a chunk moved, dropped or cut
short fails, and a file with fewer or more chunks than its header says is refused.

Erasure: a face or user removal unlinks the file (after its commit, under the folder's lock);
a file is renamed into place only if the change log shows no removal after its version (under
the same lock), so an erased vector never reappears in a file written from an older snapshot.
Data-key rotation: only a file under the active key is read (any other is deleted), and
``facesvc keys rotate-data`` deletes them all. Dev mode (no data key): nothing is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facesvc.security.crypto import DecryptionError, EmbeddingCipher, EncryptionKeyError

log = logging.getLogger(__name__)

MAGIC = b"FSVCSEAL"
FORMAT = 1
CHUNK_BYTES = 32 * 2**20
_SUFFIX = ".sealed"


class SealedSnapshotError(ValueError):
    """A sealed snapshot that cannot be used (tampered, cut short, another key/model/size)."""


@dataclass(frozen=True)
class SealedHeader:
    instance: str
    model: str
    dim: int
    version: int
    cells: int  # IVF cells (1: none yet)
    key_id: str
    chunks: int
    plain_bytes: int
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()


def cache_folder(setting: Path | None, sqlite_path: str | None) -> Path | None:
    """The folder setting, else ``gallery-cache`` beside the SQLite file (None: no file)."""
    if setting is not None:
        return setting
    if sqlite_path is None:
        return None
    return Path(sqlite_path).resolve().parent / "gallery-cache"


def _associated(header: SealedHeader, index: int) -> bytes:
    return header.digest + index.to_bytes(8, "little")


def _read_header(handle: object) -> SealedHeader:
    read = handle.read  # type: ignore[attr-defined]
    head = read(16)
    if len(head) != 16 or head[:8] != MAGIC:
        raise SealedSnapshotError("not a sealed gallery snapshot")
    size = int.from_bytes(head[8:16], "little")
    if size > 1 << 20:
        raise SealedSnapshotError("header too large")
    raw = read(size)
    try:
        meta = json.loads(raw)
        if meta["format"] != FORMAT:
            raise SealedSnapshotError(f"format {meta['format']}")
        return SealedHeader(
            instance=str(meta["instance"]),
            model=str(meta["model"]),
            dim=int(meta["dim"]),
            version=int(meta["version"]),
            cells=int(meta["cells"]),
            key_id=str(meta["key_id"]),
            chunks=int(meta["chunks"]),
            plain_bytes=int(meta["plain_bytes"]),
            raw=raw,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SealedSnapshotError(f"bad header: {exc}") from exc


class SealedStore:
    """The sealed snapshot of one database's gallery of one model (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        instance: str,
        model: str,
        cipher: EmbeddingCipher,
        sqlite_path: str | None = None,
    ) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
        if folder.is_symlink() or info.st_uid != os.getuid():
            raise PermissionError(f"{folder} is not a folder of this user")
        if info.st_mode & 0o077:
            folder.chmod(0o700)
        self.folder = folder
        self.instance = instance
        self.model = model
        self.cipher = cipher
        self.sqlite_path = sqlite_path
        safe_model = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:40]
        self.path = folder / f"facesvc-gallery-{instance}-{safe_model}{_SUFFIX}"

    @property
    def enabled(self) -> bool:
        return self.cipher.active_key_id is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Orders renames into place against erasures' unlinks (held briefly)."""
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def erase(self, before: int | None = None) -> None:
        """Unlink the file (a face or user was removed: it may hold that vector). ``before``:
        the removal's version; a file sealed at it or later (the remover's re-seal without the
        row) cannot hold the vector and stays."""
        with self.locked(), contextlib.suppress(FileNotFoundError):
            if before is not None:
                header = self.header()
                if header is not None and header.version >= before:
                    return
            self.path.unlink()
            log.info("sealed gallery snapshot removed (a face or user was erased)")

    def header(self) -> SealedHeader | None:
        try:
            with self.path.open("rb") as handle:
                return _read_header(handle)
        except (OSError, SealedSnapshotError):
            return None

    # --- write ----------------------------------------------------------------------------
    def write(self, snapshot_file: Path, version: int, dim: int, cells: int) -> bool:
        """Seal ``snapshot_file`` (a snapshot of gallery ``version``) into place; False when
        skipped (dev mode, a newer file there, or a removal logged since ``version``).
        Blocking: run it in a thread."""
        key_id = self.cipher.active_key_id
        if key_id is None:
            return False
        if self._has_newer(key_id, version, cells):
            return False
        plain_bytes = snapshot_file.stat().st_size
        chunks = max(1, -(-plain_bytes // CHUNK_BYTES))
        raw = json.dumps(
            {
                "format": FORMAT,
                "instance": self.instance,
                "model": self.model,
                "dim": dim,
                "version": version,
                "cells": cells,
                "key_id": key_id,
                "chunk_bytes": CHUNK_BYTES,
                "chunks": chunks,
                "plain_bytes": plain_bytes,
            }
        ).encode()
        header = SealedHeader(
            self.instance, self.model, dim, version, cells, key_id, chunks, plain_bytes, raw
        )
        # one name per writer: two seals of one process may overlap (after a build, a reseal)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out, snapshot_file.open("rb") as source:
                out.write(MAGIC + len(raw).to_bytes(8, "little") + raw)
                for index in range(chunks):
                    sealed = self.cipher.seal(source.read(CHUNK_BYTES), _associated(header, index))
                    out.write(len(sealed).to_bytes(4, "little"))
                    out.write(sealed)
                out.flush()
                os.fsync(out.fileno())
            with self.locked():  # again: another seal may have finished meanwhile
                if self._has_newer(key_id, version, cells) or self._removed_since(version):
                    tmp.unlink()
                    return False
                os.replace(tmp, self.path)
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return True

    def _has_newer(self, key_id: str, version: int, cells: int) -> bool:
        """Whether the file in place is newer (a later version, or the same with IVF cells)."""
        current = self.header()
        return (
            current is not None
            and current.key_id == key_id
            and (current.version, current.cells > 1) > (version, cells > 1)
        )

    def _removed_since(self, version: int) -> bool:
        """Whether a face or user removal may have been committed after ``version`` (True
        also when the log no longer reaches back to it, or cannot be read)."""
        if self.sqlite_path is None:
            return True
        try:
            connection = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True)
            try:
                current = connection.execute(
                    "SELECT version FROM gallery_state WHERE id = 1"
                ).fetchone()[0]
                if current == version:
                    return False
                oldest = connection.execute("SELECT MIN(version) FROM gallery_changes").fetchone()[
                    0
                ]
                if oldest is None or oldest > version + 1:
                    return True
                removed = connection.execute(
                    "SELECT 1 FROM gallery_changes WHERE version > ? AND kind != 'add' LIMIT 1",
                    (version,),
                ).fetchone()
                return removed is not None
            finally:
                connection.close()
        except sqlite3.Error:
            return True

    # --- read -----------------------------------------------------------------------------
    def restore(self, target: Path, dim: int | None, newest: int, oldest: int) -> int | None:
        """Decrypt the file into ``target`` (written whole, atomically, 0600) if it is for this
        gallery, model, ``dim`` (None: any) and the active key, with a version in
        [``oldest``, ``newest``]: that version, else None (and a file unusable for good is
        deleted). Blocking: run it in a thread."""
        key_id = self.cipher.active_key_id
        if key_id is None:
            return None
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with handle:
                header = _read_header(handle)
                if header.key_id != key_id:
                    raise SealedSnapshotError(f"sealed under key {header.key_id!r}, not the active")
                if header.instance != self.instance or header.model != self.model:
                    raise SealedSnapshotError("another gallery's or model's snapshot")
                if dim is not None and header.dim != dim:
                    raise SealedSnapshotError(f"{header.dim}-d faces, the embedder gives {dim}-d")
                if header.version > newest:
                    raise SealedSnapshotError(
                        f"version {header.version} is newer than the database's {newest}"
                    )
                if header.version < oldest:
                    log.info(
                        "sealed gallery snapshot v%d too old (the log starts after it)",
                        header.version,
                    )
                    return None
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    written = 0
                    for index in range(header.chunks):
                        size = int.from_bytes(handle.read(4), "little")
                        sealed = handle.read(size)
                        if size == 0 or len(sealed) != size:
                            raise SealedSnapshotError("cut short")
                        plain = self.cipher.unseal(sealed, key_id, _associated(header, index))
                        out.write(plain)
                        written += len(plain)
                    if handle.read(1) or written != header.plain_bytes:
                        raise SealedSnapshotError("size differs from its header")
                os.replace(tmp, target)
                return header.version
        except (SealedSnapshotError, DecryptionError, EncryptionKeyError, OSError) as exc:
            log.warning("sealed gallery snapshot %s not used: %s", self.path, exc)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if not isinstance(exc, OSError):
                with self.locked(), contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            return None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def remove_sealed(folder: Path | None) -> int:
    """Delete every sealed gallery snapshot in ``folder`` (after a data-key rotation)."""
    if folder is None or not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob(f"facesvc-gallery-*{_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
