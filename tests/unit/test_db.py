"""Database layer against real databases: SQLite files and a throwaway PostgreSQL.

Every database is built by the real Alembic migrations, never by create_all.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC

import numpy as np
import numpy.typing as npt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import ReflectedForeignKeyConstraint
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db import (
    Base,
    User,
    create_engine,
    create_sessionmaker,
    decode_embedding,
    encode_embedding,
    ping,
    session_scope,
)
from facesvc.db.migrate import (
    current,
    current_async,
    downgrade_async,
    head,
    upgrade,
    upgrade_async,
)
from facesvc.db.models import (
    DEFAULT_TENANT_ID,
    Face,
    ItemState,
    Job,
    JobItem,
    JobState,
    Tenant,
    include_in_autogenerate,
)
from facesvc.errors import DuplicateExternalIdError
from facesvc.repositories import FaceRepository, UserRepository
from facesvc.security.crypto import EmbeddingCipher
from tests.support.backends import chosen_backends
from tests.support.pg import (  # noqa: F401  (fixtures)
    pgvector_server,
    pgvector_url,
    postgres_server,
    postgres_url,
)

MODEL = "facenet"
VERSION = "1"
DIM = 128

HEAD = "0009"  # the newest migration
TENANT = DEFAULT_TENANT_ID
CLEAR = EmbeddingCipher(None)  # dev mode: blobs stored as they are (encryption: below)


@pytest.fixture(params=chosen_backends())
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database; the SQLite file sits in a folder that does not exist yet. PostgreSQL
    twice: Debian's server (no pgvector on Debian 12) and one with pgvector (migration 0007
    adds faces.vector there)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'var' / 'facesvc.db'}"
    fixture = "postgres_url" if request.param == "postgresql" else "pgvector_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'var' / 'facesvc.db'}"


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    unit: npt.NDArray[np.float32] = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return unit


async def add_face(
    faces: FaceRepository, user_id: uuid.UUID, vec: npt.NDArray[np.float32]
) -> uuid.UUID:
    face = await faces.add(
        user_id,
        vec,
        model_name=MODEL,
        model_version=VERSION,
        box=(10.0, 20.0, 30.0, 40.0),
        image_size=(640, 480),
        detection_score=0.99,
    )
    return face.id


async def count_faces(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM faces"))).scalar_one())


# --- migrations ------------------------------------------------------------------


@dataclass
class Schema:
    tables: set[str]
    indexes: dict[str, list[str | None]]
    fks: list[ReflectedForeignKeyConstraint]
    uniques: list[list[str]]


def _schema(conn: Connection) -> Schema:
    insp = inspect(conn)
    return Schema(
        tables=set(insp.get_table_names()),
        indexes={str(ix["name"]): ix["column_names"] for ix in insp.get_indexes("faces")},
        fks=insp.get_foreign_keys("faces"),
        uniques=[uq["column_names"] for uq in insp.get_unique_constraints("users")],
    )


async def test_migrations_create_the_schema_on_an_empty_database(database_url: str) -> None:
    assert await current_async(database_url) is None

    await upgrade_async(database_url)

    assert await current_async(database_url) == HEAD == head()
    # The sync API, as the CLI calls it: outside any running event loop.
    assert await asyncio.to_thread(current, database_url) == HEAD
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            schema = await conn.run_sync(_schema)
    finally:
        await engine.dispose()
    assert {
        "users",
        "faces",
        "gallery_state",
        "gallery_changes",
        "tenants",
        "api_keys",
        "login_attempts",
        "audit_events",
        "alembic_version",
    } <= schema.tables
    indexes = dict(schema.indexes)
    for name in ("ix_faces_vector_hnsw", "ix_faces_vector_missing"):  # pgvector only (below)
        indexes.pop(name, None)
    assert indexes == {
        "ix_faces_user_id": ["user_id"],
        "ix_faces_model_name_user_id": ["model_name", "user_id"],
    }
    [fk] = schema.fks
    assert fk["referred_table"] == "users"
    assert fk["constrained_columns"] == ["user_id"]
    assert fk["options"].get("ondelete") == "CASCADE"
    assert schema.uniques == [["tenant_id", "external_id"]]  # external ids: unique per tenant


async def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    await upgrade_async(database_url)
    await downgrade_async(database_url, "base")
    assert await current_async(database_url) is None
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert not {"users", "faces"} & tables

        await upgrade_async(database_url)
        assert await current_async(database_url) == HEAD
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"users", "faces"} <= tables
    finally:
        await engine.dispose()


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_in_autogenerate}
        )
        return list(compare_metadata(ctx, Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def _vector_column(url: str) -> tuple[bool, int | None, bool]:
    """(pgvector available to this database, faces.vector's size or None, index present)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                columns = await conn.run_sync(lambda c: inspect(c).get_columns("faces"))
                assert "vector" not in {c["name"] for c in columns}
                return False, None, False
            available = await conn.scalar(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
            )
            dim = await conn.scalar(
                text(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'faces'::regclass "
                    "AND attname = 'vector' AND NOT attisdropped"
                )
            )
            indexed = await conn.scalar(text("SELECT to_regclass('ix_faces_vector_hnsw')"))
            return bool(available), dim, indexed is not None
    finally:
        await engine.dispose()


async def test_0007_adds_the_vector_column_only_where_pgvector_is(database_url: str) -> None:
    """SQLite and PostgreSQL without pgvector: 0007 and its downgrade change nothing. With
    pgvector: faces.vector (128-d by default) and its HNSW index, gone after a downgrade."""
    await upgrade_async(database_url)
    available, dim, indexed = await _vector_column(database_url)
    assert (dim, indexed) == ((128, True) if available else (None, False))
    await downgrade_async(database_url, "0006")
    assert (await _vector_column(database_url))[1:] == (None, False)
    await upgrade_async(database_url)
    assert (await _vector_column(database_url))[1] == (128 if available else None)


def test_sync_upgrade_runs_outside_an_event_loop(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    assert current(sqlite_url) == HEAD
    upgrade(sqlite_url)  # idempotent at head
    assert current(sqlite_url) == HEAD


# --- engine ----------------------------------------------------------------------


async def test_sqlite_pragmas_on_every_connection(sqlite_url: str) -> None:
    await upgrade_async(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        # Two connections at once: the pool opens a second one, which must be set up too.
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                pragma = {
                    name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                    for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
                }
                assert pragma == {
                    "journal_mode": "wal",
                    "foreign_keys": 1,
                    "busy_timeout": 30000,
                    "synchronous": 1,  # NORMAL
                }
    finally:
        await engine.dispose()


async def test_ping(engine: AsyncEngine) -> None:
    assert await ping(engine)
    unreachable = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        assert not await ping(unreachable)
    finally:
        await unreachable.dispose()


async def test_session_scope_commits_or_rolls_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessions) as session:
        kept = await UserRepository(session, TENANT).add("kept")

    async def failing_unit_of_work() -> None:
        async with session_scope(sessions) as session:
            await UserRepository(session, TENANT).add("dropped")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_unit_of_work()

    async with sessions() as session:
        users = UserRepository(session, TENANT)
        assert await users.get(kept.id) is not None
        assert await users.get_by_name("dropped") is None


# --- repositories ------------------------------------------------------------------


async def test_user_crud(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with session_scope(sessions) as session:
        users = UserRepository(session, TENANT)
        ann = await users.add("Ann", external_id="emp-1", metadata={"team": "a", "n": [1, 2]})
        bob = await users.add("Bob")
        ann2 = await users.add("Ann")
        assert ann.created_at.tzinfo is not None

    async with sessions() as session:
        users = UserRepository(session, TENANT)
        got = await users.get(ann.id)
        assert got is not None
        assert (got.name, got.external_id, got.metadata_) == (
            "Ann",
            "emp-1",
            {"team": "a", "n": [1, 2]},
        )
        assert got.created_at.tzinfo == UTC
        assert got.updated_at >= got.created_at
        assert await users.get(uuid.uuid4()) is None

        first_ann = await users.get_by_name("Ann")
        assert first_ann is not None
        assert first_ann.id == ann.id
        assert first_ann.id != ann2.id
        assert await users.get_by_name("Nobody") is None

        page, total = await users.list_page(limit=2, offset=0)
        assert total == 3
        assert [(u.id, n) for u, n in page] == [(ann.id, 0), (bob.id, 0)]
        page, total = await users.list_page(limit=2, offset=2)
        assert total == 3
        assert [u.id for u, _ in page] == [ann2.id]

        await users.delete(got)
        await session.commit()

    async with sessions() as session:
        assert await UserRepository(session, TENANT).get(ann.id) is None


async def test_face_crud_and_embeddings(sessions: async_sessionmaker[AsyncSession]) -> None:
    vecs = unit_vectors(3)
    async with session_scope(sessions) as session:
        users, faces = UserRepository(session, TENANT), FaceRepository(session, CLEAR)
        ann = await users.add("Ann")
        bob = await users.add("Bob")
        a1 = await add_face(faces, ann.id, vecs[0])
        a2 = await add_face(faces, ann.id, vecs[1])
        b1 = await add_face(faces, bob.id, vecs[2])
        other = await faces.add(
            bob.id,
            unit_vectors(1, dim=512)[0],
            model_name="arcface",
            model_version="2",
            box=(1.5, 2.5, 3.5, 4.5),
            image_size=(100, 200),
            detection_score=0.5,
        )

    async with sessions() as session:
        users, faces = UserRepository(session, TENANT), FaceRepository(session, CLEAR)
        assert await users.face_count(ann.id) == 2
        assert await users.face_count(bob.id) == 2
        page, _ = await users.list_page(limit=10, offset=0)
        assert [(u.name, n) for u, n in page] == [("Ann", 2), ("Bob", 2)]

        listed = await faces.list_for_user(ann.id)
        assert [f.id for f in listed] == [a1, a2]
        face = await faces.get(bob.id, other.id)
        assert face is not None
        assert (face.box_x, face.box_y, face.box_width, face.box_height) == (1.5, 2.5, 3.5, 4.5)
        assert (face.image_width, face.image_height) == (100, 200)
        assert (face.model_name, face.model_version, face.embedding_dim) == ("arcface", "2", 512)
        assert face.detection_score == pytest.approx(0.5)
        assert await faces.get(ann.id, other.id) is None  # someone else's face

        ids, matrix = await faces.embeddings_for_user(ann.id, MODEL)
        assert ids == [a1, a2]
        assert matrix.dtype == np.float32
        assert matrix.shape == (2, DIM)
        np.testing.assert_array_equal(matrix, vecs[:2])
        ids, matrix = await faces.embeddings_for_user(ann.id, "arcface")
        assert ids == []
        assert matrix.shape == (0, 128)

        face_ids, user_ids, tenant_ids, matrix = await faces.all_embeddings(MODEL)
        assert sorted(zip(face_ids, user_ids, strict=True)) == sorted(
            [(a1, ann.id), (a2, ann.id), (b1, bob.id)]
        )
        assert set(tenant_ids) == {TENANT}
        assert matrix.shape == (3, DIM)
        by_face = dict(zip(face_ids, matrix, strict=True))
        np.testing.assert_array_equal(by_face[b1], vecs[2])
        assert (await faces.all_embeddings("unknown"))[3].shape == (0, 128)

        missing = uuid.uuid4()
        assert await faces.names_for([ann.id, bob.id, missing, ann.id]) == {
            ann.id: "Ann",
            bob.id: "Bob",
        }
        assert await faces.names_for([]) == {}

        await faces.delete(face)
        await session.commit()

    async with sessions() as session:
        assert await UserRepository(session, TENANT).face_count(bob.id) == 1


async def test_add_face_rejects_bad_embeddings(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        user = await UserRepository(session, TENANT).add("Ann")
        faces = FaceRepository(session, CLEAR)
        with pytest.raises(ValueError, match="normalised"):
            await add_face(faces, user.id, np.full(DIM, 0.5, dtype=np.float32))
        with pytest.raises(ValueError, match="1-D"):
            await add_face(faces, user.id, unit_vectors(2))


async def test_deleting_a_user_deletes_their_faces(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    vecs = unit_vectors(4)
    async with session_scope(sessions) as session:
        users, faces = UserRepository(session, TENANT), FaceRepository(session, CLEAR)
        ann, bob, cid = await users.add("Ann"), await users.add("Bob"), await users.add("Cid")
        for vec in vecs[:2]:
            await add_face(faces, ann.id, vec)
        await add_face(faces, bob.id, vecs[2])
        await add_face(faces, cid.id, vecs[3])
    assert await count_faces(engine) == 4

    # Through the repository, in a session that never loaded the faces.
    async with session_scope(sessions) as session:
        users = UserRepository(session, TENANT)
        loaded = await users.get(ann.id)
        assert loaded is not None
        await users.delete(loaded)
    assert await count_faces(engine) == 2

    # Raw SQL: the database's own ON DELETE CASCADE (foreign keys enforced on SQLite too).
    async with sessions() as session:
        target = await UserRepository(session, TENANT).get(bob.id)
        assert target is not None
        await session.execute(
            delete(User).where(User.id == bob.id).execution_options(synchronize_session=False)
        )
        await session.commit()
    assert await count_faces(engine) == 1


async def test_face_needs_an_existing_user(sessions: async_sessionmaker[AsyncSession]) -> None:
    from sqlalchemy.exc import IntegrityError

    async with sessions() as session:
        with pytest.raises(IntegrityError):
            await add_face(FaceRepository(session, CLEAR), uuid.uuid4(), unit_vectors(1)[0])


async def test_duplicate_external_id_keeps_the_session_usable(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        users = UserRepository(session, TENANT)
        first = await users.add("Ann", external_id="emp-1")
        with pytest.raises(DuplicateExternalIdError) as caught:
            await users.add("Other Ann", external_id="emp-1")
        assert caught.value.external_id == "emp-1"
        # The outer transaction survived the failed SAVEPOINT: keep working in it.
        second = await users.add("Bob", external_id="emp-2")
        assert await users.get(first.id) is first
        await session.commit()

    async with sessions() as session:
        page, total = await UserRepository(session, TENANT).list_page(limit=10, offset=0)
        assert total == 2
        assert [u.external_id for u, _ in page] == ["emp-1", "emp-2"]
        assert second.id in {u.id for u, _ in page}

    # The SAVEPOINT lives inside the caller's transaction: rolling that back undoes
    # the users added before it too (on SQLite this needs the explicit BEGIN).
    async with sessions() as session:
        users = UserRepository(session, TENANT)
        await users.add("Cid", external_id="emp-3")
        with pytest.raises(DuplicateExternalIdError):
            await users.add("Dup", external_id="emp-3")
        await session.rollback()
    async with sessions() as session:
        assert await UserRepository(session, TENANT).get_by_name("Cid") is None


async def test_job_states_are_stored_as_their_strings(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """JobState and ItemState are enums in the code and the same strings in the database as
    before (no migration): rows read back as members; a state outside the enum is refused."""
    from sqlalchemy.exc import StatementError

    job = Job(tenant_id=TENANT, kind="detect", actor="test", scopes="verify", total=1)
    async with session_scope(sessions) as session:
        session.add(job)
        await session.flush()
        session.add(JobItem(job_id=job.id, position=0))
    async with session_scope(sessions) as session:
        raw = await session.execute(
            text("SELECT j.state, i.state FROM jobs j JOIN job_items i ON i.job_id = j.id")
        )
        assert tuple(raw.one()) == ("queued", "pending")
        await session.execute(text("UPDATE jobs SET state = 'running'"))
    async with sessions() as session:
        read = (await session.scalars(select(Job))).one()
        item = (await session.scalars(select(JobItem))).one()
    assert (type(read.state), read.state) == (JobState, JobState.RUNNING)
    assert (type(item.state), item.state) == (ItemState, ItemState.PENDING)
    async with sessions() as session:
        stored = (await session.scalars(select(Job))).one()
        stored.state = "done"  # type: ignore[assignment]
        with pytest.raises(StatementError, match="'done' is not a valid JobState"):
            await session.flush()


def test_embedding_codec() -> None:
    vec = unit_vectors(1)[0]
    blob = encode_embedding(vec)
    assert len(blob) == DIM * 4
    assert blob == vec.astype("<f4").tobytes()
    # Big-endian input is stored little-endian, same values.
    assert encode_embedding(vec.astype(">f4")) == blob
    back = decode_embedding(blob)
    assert back.dtype == np.float32
    assert back.flags.writeable
    assert back.tobytes() == vec.tobytes()
    with pytest.raises(ValueError, match="1-D"):
        encode_embedding(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 4"):
        decode_embedding(b"\x00\x01\x02")


async def test_embeddings_round_trip_bit_exactly(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    vecs = unit_vectors(5, seed=42)
    vecs[0, 0] = np.float32(np.nextafter(vecs[0, 0], np.float32(1)))  # odd last bit
    async with session_scope(sessions) as session:
        user = await UserRepository(session, TENANT).add("Ann")
        faces = FaceRepository(session, CLEAR)
        for vec in vecs:
            await add_face(faces, user.id, vec)

    async with sessions() as session:
        faces = FaceRepository(session, CLEAR)
        _, matrix = await faces.embeddings_for_user(user.id, MODEL)
        assert matrix.tobytes() == vecs.tobytes()
        stored = await faces.list_for_user(user.id)
        assert [f.embedding for f in stored] == [v.astype("<f4").tobytes() for v in vecs]
        back = decode_embedding(stored[0].embedding)
        assert back.view(np.uint32).tolist() == vecs[0].view(np.uint32).tolist()


async def test_a_restart_sees_the_same_data(database_url: str) -> None:
    await upgrade_async(database_url)
    vecs = unit_vectors(2, seed=7)
    engine = create_engine(database_url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            user = await UserRepository(session, TENANT).add(
                "Ann", external_id="x", metadata={"k": 1}
            )
            face_ids = [await add_face(FaceRepository(session, CLEAR), user.id, v) for v in vecs]
    finally:
        await engine.dispose()

    restarted = create_engine(database_url)
    try:
        async with create_sessionmaker(restarted)() as session:
            got = await UserRepository(session, TENANT).get(user.id)
            assert got is not None
            assert (got.name, got.external_id, got.metadata_) == ("Ann", "x", {"k": 1})
            assert got.created_at == user.created_at
            ids, matrix = await FaceRepository(session, CLEAR).embeddings_for_user(user.id, MODEL)
            assert ids == face_ids
            assert matrix.tobytes() == vecs.tobytes()
    finally:
        await restarted.dispose()


# --- tenants, encryption at rest, migration of existing rows ----------------------------


async def test_users_of_another_tenant_are_invisible(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from facesvc.repositories.tenants import TenantRepository

    async with session_scope(sessions) as session:
        other = await TenantRepository(session).get_or_create("other")
        mine, theirs = UserRepository(session, TENANT), UserRepository(session, other.id)
        ann = await mine.add("Ann", external_id="emp-1")
        # the same external id in another tenant is another person, not a conflict
        bob = await theirs.add("Ann", external_id="emp-1")
    async with sessions() as session:
        mine, theirs = UserRepository(session, TENANT), UserRepository(session, other.id)
        assert await mine.get(bob.id) is None
        assert await theirs.get(ann.id) is None
        assert (await mine.get_by_external_id("emp-1")).id == ann.id  # type: ignore[union-attr]
        assert (await theirs.get_by_name("Ann")).id == bob.id  # type: ignore[union-attr]
        assert [u.id for u, _ in (await mine.list_page(10, 0))[0]] == [ann.id]
        assert (await theirs.list_page(10, 0))[1] == 1


async def test_embeddings_are_encrypted_at_rest_and_bound_to_their_row(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from facesvc.security.crypto import (
        DecryptionError,
        EncryptionKeyError,
        generate_data_key,
        parse_data_keys,
    )

    old_key = generate_data_key("old")
    old = EmbeddingCipher.from_setting(old_key)
    vecs = unit_vectors(2, seed=3)
    async with session_scope(sessions) as session:
        user = await UserRepository(session, TENANT).add("Ann")
        faces = FaceRepository(session, old)
        ids = [await add_face(faces, user.id, v) for v in vecs]

    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT embedding, key_id FROM faces"))).all()
    plain = {v.astype("<f4").tobytes() for v in vecs}
    for blob, key_id in rows:
        assert key_id == "old"
        assert bytes(blob) not in plain
        assert len(blob) == DIM * 4 + 12 + 16  # nonce + ciphertext + tag
        for p in plain:  # no stretch of the vector appears in the clear
            assert p[:16] not in bytes(blob)

    async with sessions() as session:
        _, matrix = await FaceRepository(session, old).embeddings_for_user(user.id, MODEL)
        assert matrix.tobytes() == vecs.tobytes()
        with pytest.raises(EncryptionKeyError, match="old"):  # the key is not configured
            await FaceRepository(session, CLEAR).embeddings_for_user(user.id, MODEL)

    # a malformed key names the command that makes a good one
    with pytest.raises(EncryptionKeyError, match="`facesvc keys gen-data-key`"):
        parse_data_keys("no-colon-here")

    # rotation: the new key first, the old one after it; rotate-data re-encrypts
    both = EmbeddingCipher(parse_data_keys(generate_data_key("new") + "," + old_key))
    assert both.active_key_id == "new"
    async with session_scope(sessions) as session:
        changed, after = await FaceRepository(session, both).reencrypt_batch(None, 1)
        assert (changed, after is not None) == (1, True)
        changed, after = await FaceRepository(session, both).reencrypt_batch(after, 1)
        assert changed == 1
        assert (await FaceRepository(session, both).reencrypt_batch(after, 1))[0] == 0
    async with sessions() as session:
        counts = await FaceRepository(session, both).key_id_counts()
        assert counts == {"new": 2}
        _, matrix = await FaceRepository(session, both).embeddings_for_user(user.id, MODEL)
        assert matrix.tobytes() == vecs.tobytes()

    # a ciphertext moved onto another row does not decrypt (the face id is associated data)
    async with session_scope(sessions) as session:
        first = await session.get(Face, ids[0])
        second = await session.get(Face, ids[1])
        assert first is not None
        assert second is not None
        first.embedding = second.embedding
    async with sessions() as session:
        with pytest.raises(DecryptionError):
            await FaceRepository(session, both).embeddings_for_user(user.id, MODEL)


async def test_upgrade_moves_existing_users_to_the_default_tenant(database_url: str) -> None:
    """Rows written at 0002 (before tenants) survive the upgrade, in tenant 'default'."""
    await upgrade_async(database_url, "0002")
    engine = create_engine(database_url)
    user_id, face_id = uuid.uuid4(), uuid.uuid4()
    blob = unit_vectors(1)[0].astype("<f4").tobytes()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (id, name, external_id, created_at, updated_at) "
                    "VALUES (:id, 'Old', 'ext-1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ).bindparams(_uuid_param(database_url, user_id))
            )
            await conn.execute(
                text(
                    "INSERT INTO faces (id, user_id, embedding, embedding_dim, model_name, "
                    "model_version, box_x, box_y, box_width, box_height, image_width, "
                    "image_height, detection_score, created_at) VALUES (:fid, :id, :blob, 128, "
                    "'facenet', '1', 0, 0, 1, 1, 10, 10, 0.9, CURRENT_TIMESTAMP)"
                ).bindparams(
                    _uuid_param(database_url, user_id),
                    _uuid_param(database_url, face_id, "fid"),
                    blob=blob,
                )
            )
        await upgrade_async(database_url)
        async with create_sessionmaker(engine)() as session:
            got = await UserRepository(session, TENANT).get(user_id)
            assert got is not None
            assert (got.name, got.external_id) == ("Old", "ext-1")
            ids, matrix = await FaceRepository(session, CLEAR).embeddings_for_user(
                user_id, "facenet"
            )
            assert ids == [face_id]
            assert matrix.tobytes() == blob
    finally:
        await engine.dispose()


async def test_0009_leaves_every_tenant_without_sensitive_attributes(database_url: str) -> None:
    """A tenant of 0008 (with liveness required) gets sensitive_attributes off, as does a new
    one; the downgrade drops the column and keeps the rows."""
    await upgrade_async(database_url, "0008")
    engine = create_engine(database_url)
    tenant_id = uuid.uuid4()

    async def columns() -> set[str]:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: {column["name"] for column in inspect(c).get_columns("tenants")}
            )

    try:
        assert "sensitive_attributes" not in await columns()
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO tenants (id, name, require_liveness, created_at) "
                    "VALUES (:id, 'strict', true, CURRENT_TIMESTAMP)"
                ).bindparams(_uuid_param(database_url, tenant_id))
            )
        await upgrade_async(database_url)
        async with create_sessionmaker(engine)() as session:
            tenant = await session.get(Tenant, tenant_id)
            assert tenant is not None
            assert (tenant.require_liveness, tenant.sensitive_attributes) == (True, False)
            session.add(Tenant(name="new"))
            await session.commit()
        async with engine.connect() as conn:
            flags = (await conn.execute(text("SELECT sensitive_attributes FROM tenants"))).all()
        assert [bool(flag) for (flag,) in flags] == [False, False, False]  # with 'default'

        await downgrade_async(database_url, "0008")
        assert "sensitive_attributes" not in await columns()
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM tenants"))).scalar_one()
        assert count == 3
    finally:
        await engine.dispose()


def _uuid_param(url: str, value: uuid.UUID, name: str = "id") -> object:
    """A bound uuid as each backend stores sqlalchemy.Uuid (SQLite: 32 hex characters)."""
    from sqlalchemy import bindparam

    return bindparam(name, value.hex if url.startswith("sqlite") else value)


async def test_0007_without_the_right_to_create_the_extension_is_a_no_op(
    pgvector_url: str,  # noqa: F811
) -> None:
    """pgvector is not a trusted extension: a database owner who is not a superuser cannot
    create it, so 0007 leaves the schema alone; once a superuser has created it, re-running
    0007 (downgrade to 0006, upgrade) adds the column."""
    role = f"owner_{uuid.uuid4().hex[:8]}"
    database = pgvector_url.rsplit("/", 1)[1]
    admin = create_engine(pgvector_url)
    try:
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER"))
            await conn.execute(text(f"ALTER DATABASE {database} OWNER TO {role}"))
            await conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
        owner_url = pgvector_url.replace("://postgres@", f"://{role}@")
        await upgrade_async(owner_url)
        assert await current_async(owner_url) == HEAD
        assert (await _vector_column(owner_url))[1] is None
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("CREATE EXTENSION vector"))
        await downgrade_async(owner_url, "0006")
        await upgrade_async(owner_url)
        assert (await _vector_column(owner_url))[1:] == (128, True)
    finally:
        await admin.dispose()
