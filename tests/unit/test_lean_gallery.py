"""The embedded gallery backend: a shared snapshot of fixed-size arrays plus a private delta per
worker (facesvc.gallery.snapshot, facesvc.gallery.lean): search against brute force, growth,
deletion, tenant isolation, IVF recall, the snapshot file's versions and clean-up, and two
workers on one database kept in step by the version row and the change log."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import DEFAULT_TENANT_ID as TENANT
from facesvc.gallery.lean import LeanGallery, rows_from_lists
from facesvc.gallery.lean_index import LeanIndex
from facesvc.gallery.snapshot import Snapshot, attach_snapshot, build_snapshot, write_snapshot
from facesvc.gallery.snapshot_store import SnapshotStore, on_ram
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository
from facesvc.security.crypto import EmbeddingCipher, generate_data_key
from tests.support.gallery import brute_force, enrol, unit

SHM = Path("/dev/shm")
needs_shm = pytest.mark.skipif(not on_ram(SHM), reason="no RAM-backed /dev/shm here")


def snapshot_of(
    faces: list[uuid.UUID],
    users: list[uuid.UUID],
    vectors: np.ndarray,
    tenants: list[uuid.UUID] | None = None,
    version: int = 1,
    ivf_min_size: int = 1_000,
) -> Snapshot:
    rows = rows_from_lists(version, faces, users, tenants or [TENANT] * len(faces), vectors)
    data = build_snapshot(
        version,
        "m",
        vectors.shape[1],
        rows.face_ids,
        rows.user_ids,
        rows.tenant_of_row,
        rows.tenants,
        rows.vectors,
        ivf_min_size,
    )
    return Snapshot(data)


def lean(snapshot: Snapshot, ann_min_size: int = 1_000, nprobe: int = 8) -> LeanIndex:
    index = LeanIndex("m", ann_min_size=ann_min_size, nprobe=nprobe)
    index.attach(snapshot)
    return index


def test_search_is_best_face_per_user_and_matches_brute_force() -> None:
    people = [uuid.uuid4() for _ in range(50)]
    users = [people[i % 50] for i in range(2000)]  # 40 faces per user: the pool must widen
    vectors = unit(2000)
    faces = [uuid.uuid4() for _ in users]
    index = lean(snapshot_of(faces, users, vectors, ivf_min_size=10**9))
    assert len(index) == 2000
    assert index.users == 50
    for query in unit(20):
        hits = index.search(query, 10, TENANT)
        assert [h.user_id for h in hits] == brute_force(vectors, users, query, 10)
        best = hits[0]
        assert best.similarity == pytest.approx(float(vectors[faces.index(best.face_id)] @ query))


def test_growth_deletion_and_idempotent_adds_across_chunks() -> None:
    """3,000 adds (three delta chunks) on top of a snapshot, then face and user removals, in
    both parts; the index equals brute force over what is left at every step."""
    base_faces = [uuid.uuid4() for _ in range(500)]
    base_users = [uuid.uuid4() for _ in range(500)]
    base_vectors = unit(500)
    index = lean(snapshot_of(base_faces, base_users, base_vectors, version=10))
    held = dict(zip(base_faces, zip(base_users, base_vectors, strict=True), strict=True))
    people = [uuid.uuid4() for _ in range(300)]
    version = 10
    for i, vector in enumerate(unit(3000)):
        version += 1
        face = uuid.uuid4()
        index.apply(version, ("add", face, people[i % 300], vector, TENANT))
        held[face] = (people[i % 300], vector)
    version += 1
    index.apply(version, ("add", base_faces[0], base_users[0], base_vectors[0], TENANT))
    assert len(index) == len(held) == 3500  # an add it already holds is not doubled
    for face in [*base_faces[:100], *list(held)[600:700]]:  # half from the snapshot, half added
        version += 1
        index.apply(version, ("remove_face", face))
        held.pop(face, None)
    for user in [base_users[200], people[7]]:
        version += 1
        index.apply(version, ("remove_user", user))
        held = {f: uv for f, uv in held.items() if uv[0] != user}
    assert len(index) == len(held) == index.faces_of(TENANT)
    faces = list(held)
    users = [held[f][0] for f in faces]
    vectors = np.stack([held[f][1] for f in faces])
    for query in [*unit(10), base_vectors[0], base_vectors[50]]:
        hits = index.search(query, 5, TENANT)
        assert [h.user_id for h in hits] == brute_force(vectors, users, query, 5)
        assert all(h.face_id in held for h in hits)
    assert index.version == version
    index.apply(version + 2, ("remove_face", faces[0]))  # a version missed: catch up first
    assert index.stale


def test_a_search_sees_only_its_tenant_on_both_paths() -> None:
    """Two tenants of 3,000 faces each in one snapshot (IVF from 1,000 faces) plus a third
    added later: a tenant's probe never returns another tenant's face, even its own photo."""
    tenant_a, tenant_b, tenant_c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    n = 6000
    faces = [uuid.uuid4() for _ in range(n)]
    users = [uuid.uuid4() for _ in range(n)]
    tenants = [tenant_a if i % 2 else tenant_b for i in range(n)]
    vectors = unit(n)
    owner = dict(zip(faces, tenants, strict=True))
    for ann_min_size in (1_000, 10**9):  # IVF and exact
        index = lean(snapshot_of(faces, users, vectors, tenants), ann_min_size=ann_min_size)
        assert index.snapshot.data.cells > 1
        late_face, late_user = uuid.uuid4(), uuid.uuid4()
        index.apply(2, ("add", late_face, late_user, vectors[0], tenant_c))
        for row in range(0, n, 97):
            tenant = tenants[row]
            other = tenant_b if tenant == tenant_a else tenant_a
            assert index.search(vectors[row], 1, tenant)[0].face_id == faces[row]
            assert all(owner[h.face_id] == other for h in index.search(vectors[row], 5, other))
        assert [h.face_id for h in index.search(vectors[0], 5, tenant_c)] == [late_face]
        assert index.search(vectors[0], 5, uuid.uuid4()) == []
        assert (index.faces_of(tenant_a), index.faces_of(tenant_c)) == (n // 2, 1)


def test_ivf_agrees_with_exact_search() -> None:
    n = 30_000
    people = [uuid.uuid4() for _ in range(n // 2)]
    users = [people[i // 2] for i in range(n)]
    faces = [uuid.uuid4() for _ in range(n)]
    vectors = unit(n)
    snapshot = snapshot_of(faces, users, vectors)
    approx = lean(snapshot, ann_min_size=1_000, nprobe=128)  # 128 of 346 cells
    exact = lean(snapshot, ann_min_size=10**9)
    rng = np.random.default_rng(5)
    rows = rng.integers(0, n, 200)
    probes = vectors[rows] + rng.normal(scale=0.05, size=(200, 128)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    agree = sum(
        exact.search(p, 1, TENANT)[0].user_id == approx.search(p, 1, TENANT)[0].user_id
        for p in probes
    )
    assert agree / len(probes) >= 0.99
    approx.apply(2, ("remove_face", faces[rows[0]]))
    assert all(h.face_id != faces[rows[0]] for h in approx.search(vectors[rows[0]], 5, TENANT))


@needs_shm
@needs_shm
def test_an_erased_face_leaves_the_shared_file_at_once() -> None:
    """Removing a face (or a user) zeroes its vector in the shared snapshot, which every
    worker maps, instead of leaving the plaintext there until the next build. Searches stay
    right: the row is dead, and a zero vector matches nothing."""
    vectors = unit(200)
    faces = [uuid.uuid4() for _ in range(200)]
    users = [uuid.uuid4() for _ in range(200)]
    private = snapshot_of(faces, users, vectors, version=3, ivf_min_size=10**9)
    store = SnapshotStore(SHM, uuid.uuid4().hex, "m")
    path = store.path_for(3)
    write_snapshot(path, private.data)
    index = lean(attach_snapshot(path), ann_min_size=10**9)
    other = lean(attach_snapshot(path), ann_min_size=10**9)  # another worker, not caught up
    try:
        gone, user_gone = vectors[17].tobytes(), vectors[42].tobytes()
        assert gone in path.read_bytes()
        index.apply(4, ("remove_face", faces[17]))
        index.apply(5, ("remove_user", users[42]))
        content = path.read_bytes()
        assert gone not in content
        assert user_gone not in content
        assert vectors[18].tobytes() in content
        assert index.search(vectors[17], 1, TENANT)[0].face_id != faces[17]
        assert other.search(vectors[17], 1, TENANT)[0].face_id != faces[17]  # scores 0 there
        assert other.search(vectors[18], 1, TENANT)[0].face_id == faces[18]
    finally:
        index.close()
        other.close()
        store.remove_unused(newest=False)
        store.remove_lock_if_idle()


def test_snapshot_file_round_trip_and_clean_up() -> None:
    vectors = unit(300)
    faces = [uuid.uuid4() for _ in range(300)]
    users = [uuid.uuid4() for _ in range(300)]
    private = snapshot_of(faces, users, vectors, version=7).data
    store = SnapshotStore(SHM, uuid.uuid4().hex, "facenet/v1")
    assert oct(store.directory.stat().st_mode & 0o777) == "0o700"
    old, new = store.path_for(6), store.path_for(7)
    write_snapshot(old, private)
    write_snapshot(new, private)
    assert oct(new.stat().st_mode & 0o777) == "0o600"
    attached = attach_snapshot(new)
    data = attached.data
    assert (data.version, data.count, data.tenants) == (7, 300, [TENANT])
    assert np.array_equal(data.vectors, private.vectors)
    assert data.row_of(faces[123]) is not None
    assert data.row_of(uuid.uuid4()) is None
    with pytest.raises(ValueError, match="read-only"):
        data.vectors[0, 0] = 1.0
    assert [v for v, _, _ in store.versions()] == [6, 7]
    with store.locked():  # another worker is listing snapshots to attach one: hands off
        assert store.remove_unused() == 0
    assert store.remove_unused() == 1  # version 6: nobody holds it; 7 is attached
    assert [v for v, _, _ in store.versions()] == [7]
    del data  # the arrays map the file: once they are gone, close() unmaps it
    attached.close()
    assert store.remove_unused() == 0  # the newest version stays (its IVF file may be new)
    assert store.remove_unused(newest=False) == 1
    store.remove_lock_if_idle()
    assert not list(store.directory.glob(f"{store.prefix}*"))


def test_the_newest_file_without_cells_goes_once_its_cells_file_is_attached() -> None:
    vectors = unit(300)
    faces = [uuid.uuid4() for _ in range(300)]
    data = snapshot_of(faces, [uuid.uuid4() for _ in range(300)], vectors, version=3).data
    store = SnapshotStore(SHM, uuid.uuid4().hex, "facenet/v1")
    plain, cells = store.path_for(3), store.path_for(3, ivf=True)
    write_snapshot(plain, data)
    held = attach_snapshot(plain)
    assert store.remove_unused() == 0  # the newest, and no file with cells yet
    write_snapshot(cells, data)
    assert store.remove_unused() == 0  # a worker still holds the plain one
    held.close()
    attached = attach_snapshot(cells)
    assert store.remove_unused() == 1  # nobody holds the plain one: the workers moved on
    assert [(v, ivf) for v, ivf, _ in store.versions()] == [(3, True)]
    attached.close()
    assert store.remove_unused(newest=False) == 1
    store.remove_lock_if_idle()


@needs_shm
async def test_a_planted_shared_folder_leaves_the_gallery_private_and_working(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """Another local user who made /dev/shm/facesvc-<uid> first (here: a file in its place)
    cannot stop the service nor receive its vectors: the worker keeps a private copy."""
    cipher = EmbeddingCipher.from_setting(generate_data_key())
    path = database_url.split("///", 1)[1]
    shared = Path(tempfile.mkdtemp(dir=SHM))
    try:
        (shared / f"facesvc-{os.getuid()}").write_bytes(b"planted")
        async with session_scope(sessions) as session:
            ada = await UserRepository(session, TENANT).add("Ada")
        gallery = LeanGallery(
            LeanIndex("m", ann_min_size=10**9),
            cipher,
            sessions,
            sqlite_path=path,
            shared_dir=shared,
        )
        (va,) = unit(1)
        await enrol(sessions, gallery, ada.id, va, cipher)
        await gallery.start(128)
        assert gallery.index.snapshot.path is None  # private to this worker
        hits = (await gallery.search(va, 1, TENANT)).hits
        assert [h.user_id for h in hits] == [ada.id]
        gallery.close()
        assert (shared / f"facesvc-{os.getuid()}").read_bytes() == b"planted"
    finally:
        shutil.rmtree(shared)


@needs_shm
async def test_two_workers_share_one_snapshot_and_stay_in_step(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """Two workers on one SQLite file: one snapshot file, mapped by both; an enrolment or a
    deletion through one reaches the other by the change log (no reload); once the changes
    outgrow the delta a new snapshot version replaces the old, and the last worker to stop
    leaves nothing in /dev/shm."""
    cipher = EmbeddingCipher.from_setting(generate_data_key())
    path = database_url.split("///", 1)[1]

    def worker() -> LeanGallery:
        index = LeanIndex("m", ann_min_size=10**9, compact_after=5)
        return LeanGallery(index, cipher, sessions, sqlite_path=path, shared_dir=SHM)

    async with session_scope(sessions) as session:
        ada = await UserRepository(session, TENANT).add("Ada")
        bob = await UserRepository(session, TENANT).add("Bob")
    va, vb, vc = unit(3)
    a, b = worker(), worker()
    await enrol(sessions, a, ada.id, va, cipher)  # a face from before the start
    await a.start(128)
    await b.start(128)
    assert a.index.snapshot.path == b.index.snapshot.path is not None
    assert len(a.index) == len(b.index) == 1

    face_b = await enrol(sessions, a, bob.id, vb, cipher)
    assert len(a.index) == 2  # its own change, after the commit
    await b.refresh()
    assert (len(b.index), b.index.reloads) == (2, 1)  # caught up from the log
    assert b.index.search(vb, 1, TENANT)[0].face_id == face_b

    async with session_scope(sessions) as session:
        face = await FaceRepository(session, cipher).get(bob.id, face_b)
        assert face is not None
        await FaceRepository(session, cipher).delete(face)
        await b.face_removed(session, face_b)
    await a.refresh()
    assert [h.user_id for h in a.index.search(vb, 5, TENANT)] == [ada.id]

    first = a.index.snapshot.path
    assert first is not None
    for v in unit(6):  # past compact_after: the next refresh loads a new snapshot
        await enrol(sessions, a, ada.id, v, cipher)
    await a.refresh()
    await b.refresh()
    second = a.index.snapshot.path
    assert second != first
    assert b.index.snapshot.path == second
    assert not first.exists()  # nobody holds the old version any more
    assert len(a.index) == len(b.index) == 7
    assert a.index.search(vc, 1, TENANT)[0].user_id == ada.id
    folder = second.parent
    prefix = second.name.rsplit("-v", 1)[0]
    a.close()
    assert second.exists()  # b still maps it
    b.close()
    assert not list(folder.glob(f"{prefix}*")), os.listdir(folder)


@needs_shm
async def test_a_version_bumped_without_a_logged_change_rebuilds_once(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """`facesvc reembed` bumps the version without logging what changed: a worker cannot replay
    that, so it builds a snapshot at the new version, once (not on every later search)."""
    from facesvc.repositories.gallery import GalleryStateRepository

    cipher = EmbeddingCipher(None)
    path = database_url.split("///", 1)[1]
    gallery = LeanGallery(LeanIndex("m"), cipher, sessions, sqlite_path=path, shared_dir=SHM)
    async with session_scope(sessions) as session:
        ada = await UserRepository(session, TENANT).add("Ada")
    await enrol(sessions, gallery, ada.id, unit(1)[0], cipher)
    await gallery.start(128)
    assert gallery.index.reloads == 1
    async with session_scope(sessions) as session:
        await GalleryStateRepository(session).bump()  # as reembed does: nothing logged
    await gallery.refresh()
    assert (gallery.index.reloads, gallery.index.version) == (2, 2)
    (v,) = unit(1)
    face = await enrol(sessions, gallery, ada.id, v, cipher)
    await gallery.refresh()
    await gallery.refresh()
    assert gallery.index.reloads == 2  # the log is whole again: no more loads
    assert len(gallery.index) == 2
    assert gallery.index.search(v, 1, TENANT)[0].face_id == face
    gallery.close()


@pytest.mark.parametrize("shared", [True, False])
async def test_ivf_cells_follow_the_snapshot_and_searches_stay_right_meanwhile(
    sessions: async_sessionmaker[AsyncSession], database_url: str, shared: bool
) -> None:
    """A gallery past ann_min_size is served from a snapshot without cells at once (exact
    search), its IVF version is built in the background and attached at the next refresh; a
    face enrolled in between is replayed on top of it."""
    if shared and not on_ram(SHM):
        pytest.skip("no RAM-backed /dev/shm here")
    cipher = EmbeddingCipher(None)
    path = database_url.split("///", 1)[1]
    vectors = unit(600)
    async with session_scope(sessions) as session:
        ada = await UserRepository(session, TENANT).add("Ada")
    index = LeanIndex("m", ann_min_size=300, nprobe=24)
    gallery = LeanGallery(
        index, cipher, sessions, sqlite_path=path, shared_dir=SHM if shared else None
    )
    faces = [await enrol(sessions, gallery, ada.id, v, cipher) for v in vectors]
    await gallery.start(128)
    assert index.snapshot.data.cells == 1
    assert index.search(vectors[7], 1, TENANT)[0].face_id == faces[7]
    assert gallery._cells_task is not None
    await gallery._cells_task
    (extra,) = unit(1)
    late = await enrol(sessions, gallery, ada.id, extra, cipher)
    await gallery.refresh()
    assert index.snapshot.data.cells > 1
    assert index.snapshot.shared == shared
    assert len(index) == 601
    for row in range(0, 600, 37):
        assert index.search(vectors[row], 1, TENANT)[0].face_id == faces[row]
    assert index.search(extra, 1, TENANT)[0].face_id == late
    gallery.close()
