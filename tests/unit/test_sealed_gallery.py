"""The embedded gallery's snapshot sealed on disk under the data key (facesvc.gallery.sealed):
a restart restores it (IVF cells included) and replays the change log from its version; a
tampered, cut or foreign file is refused and the gallery built from the faces table; a face's
erasure leaves no copy of its vector in the cache folder; no data key: nothing is written."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import DEFAULT_TENANT_ID as TENANT
from facesvc.gallery.lean import LeanGallery
from facesvc.gallery.lean_index import LeanIndex
from facesvc.gallery.sealed import SealedStore, remove_sealed
from facesvc.gallery.snapshot_store import on_ram
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository
from facesvc.security.crypto import EmbeddingCipher, generate_data_key, parse_data_keys
from tests.support.gallery import enrol, unit

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not on_ram(SHM), reason="no RAM-backed /dev/shm here")
FACES = 400  # past ann_min_size below: the snapshot gets IVF cells


def worker(
    sessions: async_sessionmaker[AsyncSession], cipher: EmbeddingCipher, path: str, cache: Path
) -> LeanGallery:
    index = LeanIndex("m", ann_min_size=300, nprobe=24)
    return LeanGallery(index, cipher, sessions, sqlite_path=path, shared_dir=SHM, cache_dir=cache)


async def settle(gallery: LeanGallery) -> None:
    """The background IVF build and the seals it starts."""
    if gallery._cells_task is not None:
        await gallery._cells_task
    while gallery._seal_tasks:
        await asyncio.gather(*gallery._seal_tasks)


async def seeded(
    sessions: async_sessionmaker[AsyncSession], cipher: EmbeddingCipher, path: str, cache: Path
) -> tuple[uuid.UUID, list[uuid.UUID], np.ndarray]:
    """FACES faces of one user, a first start that seals the snapshot with cells, then a stop."""
    async with session_scope(sessions) as session:
        ada = await UserRepository(session, TENANT).add("Ada")
    vectors = unit(FACES)
    gallery = worker(sessions, cipher, path, cache)
    faces = [await enrol(sessions, gallery, ada.id, v, cipher) for v in vectors]
    await gallery.start(128)
    assert gallery.index.snapshot.data.cells == 1  # a cold start: cells in the background
    await settle(gallery)
    gallery.close()
    return ada.id, faces, vectors


class Restarted(NamedTuple):
    cipher: EmbeddingCipher
    path: str
    cache: Path
    ada: uuid.UUID
    faces: list[uuid.UUID]
    vectors: np.ndarray
    gallery: LeanGallery


async def restarted(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Restarted:
    """A gallery sealed by a first start (``seeded``) and started again, warm, with reseals
    written at once."""
    monkeypatch.setattr("facesvc.gallery.lean._RESEAL_DELAY_S", 0.0)
    cipher = EmbeddingCipher.from_setting(generate_data_key())
    path = database_url.split("///", 1)[1]
    cache = tmp_path / "cache"
    ada, faces, vectors = await seeded(sessions, cipher, path, cache)
    gallery = worker(sessions, cipher, path, cache)
    await gallery.start(128)
    return Restarted(cipher, path, cache, ada, faces, vectors, gallery)


def sealed_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.sealed"))


def assert_nowhere(cache: Path, vector: np.ndarray, cipher: EmbeddingCipher) -> None:
    """No file of the cache folder holds ``vector``'s bytes, in the clear or decryptable."""
    needle = np.asarray(vector, np.float32).tobytes()
    for entry in cache.iterdir():
        if entry.is_file():
            assert needle not in entry.read_bytes(), entry
    for entry in sealed_files(cache):
        instance = entry.name.removeprefix("facesvc-gallery-").split("-")[0]
        store = SealedStore(cache, instance, "m", cipher)
        assert store.path == entry
        target = SHM / f"facesvc-test-{uuid.uuid4().hex}"
        try:
            assert store.restore(target, None, 2**62, 0) is not None
            assert needle not in target.read_bytes(), f"{entry} decrypts to the vector"
        finally:
            target.unlink(missing_ok=True)


async def test_a_restart_restores_the_sealed_snapshot_with_its_cells_and_replays(
    sessions: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    cipher = EmbeddingCipher.from_setting(generate_data_key())
    path = database_url.split("///", 1)[1]
    cache = tmp_path / "cache"
    ada, faces, vectors = await seeded(sessions, cipher, path, cache)
    (file,) = sealed_files(cache)
    assert file.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700
    assert vectors[5].astype(np.float32).tobytes() not in file.read_bytes()  # sealed

    # a face enrolled while no worker runs: the restart replays it from the log
    writer = worker(sessions, cipher, path, cache)
    (extra,) = unit(1)
    late = await enrol(sessions, writer, ada, extra, cipher)

    gallery = worker(sessions, cipher, path, cache)
    await gallery.start(128)
    index = gallery.index
    assert index.snapshot.data.cells > 1  # restored with its IVF cells: no k-means
    assert gallery._cells_task is None
    assert len(index) == FACES + 1
    for row in range(0, FACES, 37):
        assert index.search(vectors[row], 1, TENANT)[0].face_id == faces[row]
    assert index.search(extra, 1, TENANT)[0].face_id == late
    gallery.close()
    assert sealed_files(cache) == [file]  # an enrolment leaves it (replayed at each start)


@pytest.mark.parametrize("damage", ["flip", "truncate", "other-key", "rotated", "garbage"])
async def test_a_damaged_or_foreign_file_is_refused_and_the_gallery_built_cold(
    sessions: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path, damage: str
) -> None:
    key = generate_data_key("old")
    cipher = EmbeddingCipher.from_setting(key)
    path = database_url.split("///", 1)[1]
    cache = tmp_path / "cache"
    _, faces, vectors = await seeded(sessions, cipher, path, cache)
    (file,) = sealed_files(cache)
    raw = bytearray(file.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
        file.write_bytes(raw)
    elif damage == "truncate":
        file.write_bytes(raw[: len(raw) - 100])
    elif damage == "garbage":
        file.write_bytes(b"FSVCSEAL" + b"\xff" * 64)
    elif damage == "other-key":
        cipher = EmbeddingCipher(
            {"new": parse_data_keys(generate_data_key("new"))["new"]}
            | parse_data_keys(key)  # the old key may still decrypt rows, not the file
        )
    elif damage == "rotated":
        assert remove_sealed(cache) == 1  # as `facesvc keys rotate-data` does
    gallery = worker(sessions, cipher, path, cache)
    await gallery.start(128)
    index = gallery.index
    assert index.snapshot.data.cells == 1  # built cold from the faces table
    assert len(index) == FACES
    assert index.search(vectors[9], 1, TENANT)[0].face_id == faces[9]
    await settle(gallery)
    (fresh,) = sealed_files(cache)  # sealed again, under the active key
    header = SealedStore(cache, "x", "m", cipher)
    header.path = fresh
    found = header.header()
    assert found is not None
    assert found.key_id == cipher.active_key_id
    gallery.close()


def test_the_header_binds_model_dimension_and_version(tmp_path: Path) -> None:
    """A file is restored only for its own gallery, model, dimension and a version the
    database has reached; a header edited to claim otherwise fails every chunk."""
    cipher = EmbeddingCipher.from_setting(generate_data_key())
    source = tmp_path / "snap.bin"
    payload = np.arange(1000, dtype=np.float32).tobytes()
    source.write_bytes(payload)
    cache = tmp_path / "cache"
    database = tmp_path / "state.db"  # what write() consults: version 5, nothing removed
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE gallery_state (id INTEGER, version INTEGER)")
        connection.execute("INSERT INTO gallery_state VALUES (1, 5)")
        connection.execute("CREATE TABLE gallery_changes (version INTEGER, kind TEXT)")
    connection.close()
    assert not SealedStore(cache, "inst", "m", cipher).write(source, 5, 128, 1)  # no database
    store = SealedStore(cache, "inst", "m", cipher, str(database))
    assert store.write(source, 5, 128, 1)
    target = SHM / f"facesvc-test-{uuid.uuid4().hex}"
    try:
        assert store.restore(target, 128, 5, 0) == 5
        assert target.read_bytes() == payload
        target.unlink()
        # the seal of a version with IVF cells is never replaced by that version without
        # (two seals of one build overlap: the one without cells may finish last)
        assert store.write(source, 5, 128, 20)
        assert not store.write(source, 5, 128, 1)
        header = store.header()
        assert header is not None
        assert header.cells == 20
        assert store.restore(target, 128, 9, 6) is None  # older than the log reaches
        assert store.path.exists()
        for other in (
            SealedStore(cache, "inst", "other-model", cipher, str(database)),
            SealedStore(cache, "other", "m", cipher, str(database)),
        ):
            other.path = store.path
            assert other.restore(target, 128, 5, 0) is None
            assert not target.exists()
            assert store.write(source, 5, 128, 1)
        assert store.restore(target, 64, 5, 0) is None  # another dimension
        assert store.write(source, 5, 128, 1)
        assert store.restore(target, 128, 4, 0) is None  # newer than the database
        assert store.write(source, 5, 128, 1)
        raw = store.path.read_bytes()
        store.path.write_bytes(raw.replace(b'"version": 5', b'"version": 4'))
        assert store.restore(target, 128, 5, 0) is None
        assert not store.path.exists()  # refused for good: deleted
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def test_replaying_a_removal_keeps_a_file_sealed_after_it(tmp_path: Path) -> None:
    """Worker A removes a face at version 6 and re-seals without it at 6; worker B replaying
    removal 6 later must not delete that file (only an older one may hold the vector)."""
    cipher = EmbeddingCipher.from_setting(generate_data_key())
    source = tmp_path / "snap.bin"
    source.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    database = tmp_path / "state.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE gallery_state (id INTEGER, version INTEGER)")
        connection.execute("INSERT INTO gallery_state VALUES (1, 6)")
        connection.execute("CREATE TABLE gallery_changes (version INTEGER, kind TEXT)")
    connection.close()
    store = SealedStore(tmp_path / "cache", "inst", "m", cipher, str(database))
    assert store.write(source, 6, 128, 1)
    store.erase(before=6)  # sealed at the removal's version: cannot hold the vector
    assert store.path.exists()
    store.erase(before=7)  # a later removal: this file may hold it
    assert not store.path.exists()
    assert store.write(source, 6, 128, 1)
    store.erase()  # no version given: always
    assert not store.path.exists()


async def test_erasure_leaves_no_copy_in_the_cache_folder(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deleting a face unlinks the sealed file at its commit; the worker then seals its
    snapshot minus that face (plus its delta) in the background, so the next restart is warm
    and still without it; a file written from a snapshot older than the removal is refused."""
    cipher, path, cache, ada, faces, vectors, gallery = await restarted(
        sessions, database_url, tmp_path, monkeypatch
    )
    assert len(sealed_files(cache)) == 1
    old_snapshot = gallery.index.snapshot.path
    assert old_snapshot is not None
    (extra,) = unit(1)
    late = await enrol(sessions, gallery, ada, extra, cipher)  # in the delta, not the snapshot
    reseal = LeanGallery._reseal_later  # held back until the checks below
    monkeypatch.setattr(LeanGallery, "_reseal_later", lambda self: None)
    async with session_scope(sessions) as session:
        face = await FaceRepository(session, cipher).get(ada, faces[3])
        assert face is not None
        await FaceRepository(session, cipher).delete(face)
        await gallery.face_removed(session, faces[3])
    assert sealed_files(cache) == []  # at once, before any rewrite
    assert_nowhere(cache, vectors[3], cipher)
    # a seal of the snapshot from before the removal (a slow writer): refused
    sealed = gallery._sealed
    assert sealed is not None
    data = gallery.index.snapshot.data
    assert data.version < gallery.index.version
    assert not sealed.write(old_snapshot, data.version, data.dim, data.cells)
    del data  # the arrays map the snapshot (and hold its lock) until they are gone
    assert sealed_files(cache) == []
    reseal(gallery)
    assert gallery._reseal_task is not None
    await gallery._reseal_task
    assert len(sealed_files(cache)) == 1  # rewritten without the face
    assert_nowhere(cache, vectors[3], cipher)
    with pytest.raises(AssertionError, match="decrypts to the vector"):
        assert_nowhere(cache, vectors[4], cipher)  # the check finds a face still there
    gallery.close()

    gallery = worker(sessions, cipher, path, cache)
    await gallery.start(128)
    index = gallery.index
    assert index.snapshot.data.cells > 1  # warm: restored, cells kept
    assert len(index) == FACES  # 400 - 1 + 1
    assert index.search(extra, 1, TENANT)[0].face_id == late
    assert all(h.face_id != faces[3] for h in index.search(vectors[3], 5, TENANT))
    for row in range(0, FACES, 41):
        if row != 3:
            assert index.search(vectors[row], 1, TENANT)[0].face_id == faces[row]
    gallery.close()


async def test_deleting_a_user_erases_the_sealed_copy_of_each_face(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cipher, _, cache, ada, _, vectors, gallery = await restarted(
        sessions, database_url, tmp_path, monkeypatch
    )
    reseal = LeanGallery._reseal_later  # held back until the file's removal is checked
    monkeypatch.setattr(LeanGallery, "_reseal_later", lambda self: None)
    async with session_scope(sessions) as session:
        user = await UserRepository(session, TENANT).get(ada)
        assert user is not None
        await UserRepository(session, TENANT).delete(user)
        await gallery.user_removed(session, ada)
    assert sealed_files(cache) == []
    reseal(gallery)
    assert gallery._reseal_task is not None
    await gallery._reseal_task
    for v in vectors[::50]:
        assert_nowhere(cache, v, cipher)
    assert len(gallery.index) == 0
    gallery.close()


async def test_dev_mode_writes_nothing(
    sessions: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    cipher = EmbeddingCipher(None)
    path = database_url.split("///", 1)[1]
    cache = tmp_path / "cache"
    await seeded(sessions, cipher, path, cache)
    assert not cache.exists() or not list(cache.iterdir())
