"""The in-memory 1:N index: search, incremental changes, and staying in step with SQL
across several workers (two indexes on one database)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import DEFAULT_TENANT_ID as TENANT
from facesvc.gallery.ann import ANNIndex
from facesvc.gallery.index import GalleryIndex
from facesvc.gallery.sync import GallerySync
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository
from tests.support.gallery import CLEAR, RNG, add_face, brute_force, enrol, unit


def test_search_is_best_face_per_user_and_matches_brute_force() -> None:
    people = [uuid.uuid4() for _ in range(50)]
    users = [people[i % 50] for i in range(2000)]  # 40 faces per user: the pool must widen
    vectors = unit(2000)
    faces = [uuid.uuid4() for _ in users]
    index = GalleryIndex("m")
    index.replace(faces, users, vectors, version=1)
    for query in unit(20):
        hits = index.search(query, 10)
        assert [h.user_id for h in hits] == brute_force(vectors, users, query, 10)
        assert len({h.user_id for h in hits}) == len(hits)
        sims = [h.similarity for h in hits]
        assert sims == sorted(sims, reverse=True)


def test_incremental_changes_and_stale_versions() -> None:
    index = GalleryIndex("m")
    index.replace([], [], np.zeros((0, 128), np.float32), version=0)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    a1, a2, b1 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    va, vb = unit(2)
    index.apply(1, ("add", a1, alice, va))
    index.apply(2, ("add", a2, alice, va))
    index.apply(3, ("add", b1, bob, vb))
    assert len(index) == 3
    assert index.search(vb, 1)[0].user_id == bob
    index.apply(4, ("remove_face", a1, None, None))
    assert len(index) == 2
    assert index.search(va, 1)[0].face_id == a2
    index.apply(5, ("remove_user", bob, None, None))
    assert len(index) == 1
    assert [h.user_id for h in index.search(vb, 5)] == [alice]
    assert index.version == 5
    index.apply(7, ("add", uuid.uuid4(), bob, vb))  # version 6 was missed: must reload
    assert index.version == -1


async def test_two_workers_stay_in_step(sessions: async_sessionmaker[AsyncSession]) -> None:
    worker_a, worker_b = (
        GallerySync(GalleryIndex("m"), CLEAR),
        GallerySync(GalleryIndex("m"), CLEAR),
    )
    async with session_scope(sessions) as session:
        user = await UserRepository(session, TENANT).add("Ada")
        other = await UserRepository(session, TENANT).add("Bob")
    for sync in (worker_a, worker_b):
        async with session_scope(sessions) as session:
            assert len(await sync.ensure_current(session)) == 0

    va, vb = unit(2)
    face_a = await enrol(sessions, worker_a, user.id, va)
    await enrol(sessions, worker_a, other.id, vb)
    # worker A applied its own commits without a reload
    assert len(worker_a.index) == 2
    assert worker_a.index.reloads == 1
    # worker B learns of them through the version row
    async with session_scope(sessions) as session:
        index_b = await worker_b.ensure_current(session)
    assert len(index_b) == 2
    assert index_b.search(va, 1)[0].user_id == user.id

    # a deletion through B reaches A
    async with session_scope(sessions) as session:
        face = await FaceRepository(session, CLEAR).get(user.id, face_a)
        assert face is not None
        await FaceRepository(session, CLEAR).delete(face)
        await worker_b.face_removed(session, face_a)
    assert len(worker_b.index) == 1
    async with session_scope(sessions) as session:
        index_a = await worker_a.ensure_current(session)
    assert len(index_a) == 1
    assert [h.user_id for h in index_a.search(va, 5)] == [other.id]


async def test_rolled_back_change_never_reaches_the_index(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sync = GallerySync(GalleryIndex("m"), CLEAR)
    async with session_scope(sessions) as session:
        user = await UserRepository(session, TENANT).add("Ada")
        await sync.ensure_current(session)

    async def enrol_then_fail() -> None:
        async with session_scope(sessions) as session:
            v = unit(1)[0]
            face = await add_face(session, CLEAR, user.id, v)
            await sync.face_added(session, face.id, user.id, v, "m", TENANT)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await enrol_then_fail()
    assert len(sync.index) == 0
    async with session_scope(sessions) as session:
        assert len(await sync.ensure_current(session)) == 0


def ann_backend(name: str) -> ANNIndex:
    from facesvc.gallery.ann import HNSWIndex, IVFIndex

    return HNSWIndex(128) if name == "hnsw" else IVFIndex(128, nprobe=64, min_train=1000)


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_ann_backend_agrees_with_exact_search(backend: str) -> None:
    n = 30_000
    users = [uuid.uuid4() for _ in range(n // 2)]
    user_of = [users[i // 2] for i in range(n)]
    faces = [uuid.uuid4() for _ in range(n)]
    vectors = unit(n)
    exact = GalleryIndex("m")
    approx = GalleryIndex("m", ann=ann_backend(backend), ann_min_size=1000)
    exact.replace(faces, user_of, vectors, version=1)
    # the ANN structure is built the way the service builds it: off the loop, then swapped in
    approx.replace(faces, user_of, vectors, version=1, ann=approx.prepare_ann(faces, vectors))
    rows = RNG.integers(0, n, 200)
    probes = vectors[rows] + RNG.normal(scale=0.05, size=(200, 128)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    agree = sum(exact.search(p, 1)[0].user_id == approx.search(p, 1)[0].user_id for p in probes)
    assert agree / len(probes) >= 0.99
    # a removed face is never returned, by either backend
    target = faces[rows[0]]
    for index in (exact, approx):
        index.apply(2, ("remove_face", target, None, None))
        assert all(h.face_id != target for h in index.search(vectors[rows[0]], 5))
    # a face added later is found through the ANN structure too
    late_user, late_face, late = uuid.uuid4(), uuid.uuid4(), unit(1)[0]
    approx.apply(3, ("add", late_face, late_user, late, None))
    assert approx.search(late, 1)[0].face_id == late_face


def test_ivf_trains_once_enough_faces_arrive_and_searches_exactly_until_then() -> None:
    from facesvc.gallery.ann import IVFIndex

    ivf = IVFIndex(128, min_train=500)
    index = GalleryIndex("m", ann=ivf, ann_min_size=0)
    index.replace([], [], np.zeros((0, 128), np.float32), version=1)
    vectors = unit(800)
    faces = [uuid.uuid4() for _ in range(800)]
    users = [uuid.uuid4() for _ in range(800)]
    for i in range(800):
        index.apply(2 + i, ("add", faces[i], users[i], vectors[i], None))
        if i == 10:  # too few to train on: the exact search answers
            assert not ivf.ready
            assert index.search(vectors[3], 1)[0].face_id == faces[3]
    assert ivf.ready  # trained when the 500th face arrived, with every face so far
    found = sum(index.search(vectors[i], 1)[0].face_id == faces[i] for i in range(0, 800, 8))
    assert found == 100
    index.apply(802, ("remove_user", users[5]))
    assert all(h.face_id != faces[5] for h in index.search(vectors[5], 5))


def test_a_search_sees_only_its_tenant() -> None:
    tenant_a, tenant_b = uuid.uuid4(), uuid.uuid4()
    ann, bob = uuid.uuid4(), uuid.uuid4()
    va, vb = unit(2)
    index = GalleryIndex("m")
    index.replace([uuid.uuid4()], [ann], va[None, :], version=1, tenant_ids=[tenant_a])
    index.apply(2, ("add", uuid.uuid4(), bob, vb, tenant_b))
    # bob's own photo, searched in tenant A, finds only A's user (never bob)
    assert [h.user_id for h in index.search(vb, 5, tenant_a)] == [ann]
    assert [h.user_id for h in index.search(va, 5, tenant_b)] == [bob]
    assert index.search(va, 5, uuid.uuid4()) == []  # a tenant with no faces
    assert (index.faces_of(tenant_a), index.faces_of(tenant_b)) == (1, 1)
    index.apply(3, ("remove_user", bob))
    assert index.search(vb, 5, tenant_b) == []
    assert [h.user_id for h in index.search(vb, 5, tenant_a)] == [ann]


def test_an_add_the_index_already_holds_is_not_doubled() -> None:
    """A reload can already contain the face whose 'add' arrives next (read committed)."""
    face, user, tenant = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    (v,) = unit(1)
    index = GalleryIndex("m")
    index.replace([face], [user], v[None, :], version=5, tenant_ids=[tenant])
    index.apply(6, ("add", face, user, v, tenant))
    assert len(index) == 1
    index.apply(7, ("remove_face", face))
    assert len(index) == 0
    assert index.search(v, 5, tenant) == []


def test_faces_per_tenant_stay_counted_through_adds_and_removals() -> None:
    """faces_of() is kept incrementally (identify reads it per query): after a random mix of
    adds, face and user removals it equals a count of the rows."""
    tenants = [uuid.uuid4() for _ in range(3)]
    users = [(uuid.uuid4(), tenants[i % 3]) for i in range(12)]
    faces: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] = {}  # face -> (user, tenant)
    index = GalleryIndex("m")
    first = [uuid.uuid4() for _ in range(6)]
    index.replace(
        first,
        [users[i][0] for i in range(6)],
        unit(6),
        version=1,
        tenant_ids=[users[i][1] for i in range(6)],
    )
    faces.update({f: users[i] for i, f in enumerate(first)})
    version = 1
    for step in range(300):
        version += 1
        roll = RNG.random()
        if roll < 0.6 or not faces:
            user, tenant = users[int(RNG.integers(len(users)))]
            face = uuid.uuid4()
            index.apply(version, ("add", face, user, unit(1)[0], tenant))
            faces[face] = (user, tenant)
        elif roll < 0.9:
            face = list(faces)[int(RNG.integers(len(faces)))]
            index.apply(version, ("remove_face", face, None, None))
            del faces[face]
        else:
            user = users[int(RNG.integers(len(users)))][0]
            index.apply(version, ("remove_user", user))
            faces = {f: owner for f, owner in faces.items() if owner[0] != user}
        if step % 25 == 0 or step == 299:
            for tenant in tenants:
                expected = sum(owner[1] == tenant for owner in faces.values())
                assert index.faces_of(tenant) == expected
    assert len(index) == len(faces)
    assert index.faces_of(uuid.uuid4()) == 0
