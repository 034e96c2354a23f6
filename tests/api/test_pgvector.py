"""The pgvector gallery backend (FACESVC_GALLERY_BACKEND=pgvector) on a real PostgreSQL with
the pgvector extension (tests/support/pg.py): replicas share the gallery through the database,
erasure reaches the vector, faces enrolled before the switch are filled in, and every bad
configuration is a clear start-up error (/readyz 503, one log line)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import Uuid, bindparam, text

from facesvc.app import create_app
from facesvc.container import AppState
from facesvc.db.engine import create_engine, create_sessionmaker, session_scope
from facesvc.db.migrate import upgrade_async
from facesvc.repositories.faces import FaceRepository
from facesvc.security.crypto import EmbeddingCipher
from facesvc.services.gallery_vectors import VectorColumnError, fill_vectors
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, DATA_KEY, assert_problem, create_user, enrol, running_app
from tests.support.data import DATA_DIR, image_file, lfw_image
from tests.support.pg import (
    pgvector_url,  # noqa: F401  (fixture)
    stored_vector,
)
from tests.support.server_process import facesvc_command


async def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``facesvc ARGS`` in a process of its own (off the event loop: it loads the models)."""
    return await asyncio.to_thread(
        subprocess.run,
        [*facesvc_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def pgvector_settings(url: str, backend: str = "pgvector") -> Settings:
    return Settings(
        database_url=url,
        data_dir=DATA_DIR,
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
        gallery_backend=backend,  # type: ignore[arg-type]
    )


def api(app: FastAPI, name: str = "facesvc.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=f"http://{name}",
        headers={"X-API-Key": ADMIN_KEY},
    )


async def execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def start_up_error(settings: Settings, caplog: pytest.LogCaptureFixture) -> str:
    """Start an app that must refuse: /readyz answers 503 with the reason, and the log has
    one error line for it. Returns the reason."""
    caplog.clear()
    app = create_app(settings)
    with caplog.at_level(logging.ERROR, logger="facesvc"):
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
            state: AppState = app.state.facesvc
            await state.models_ready.wait()
            async with api(app, "broken") as c:
                body = assert_problem(await c.get("/readyz"), 503, "not-ready")
                probe = image_file(lfw_image("Tony_Blair", 1))
                assert_problem(await c.post("/v1/identify", files=probe), 503, "not-ready")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "facesvc"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert state.models_error is not None
    assert state.models_error in str(body["detail"])
    return state.models_error


@pytest.fixture
async def pgvector_db(pgvector_url: str) -> str:  # noqa: F811
    await upgrade_async(pgvector_url)
    return pgvector_url


# --- bad configuration -------------------------------------------------------------------


async def test_pgvector_on_sqlite_is_a_start_up_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'facesvc.db'}"
    await upgrade_async(url)  # migration 0007 is a no-op on SQLite
    reason = await start_up_error(pgvector_settings(url), caplog)
    assert "needs PostgreSQL" in reason
    assert "SQLite" in reason


async def test_missing_extension_and_missing_column_are_start_up_errors(
    pgvector_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # At the newest schema (the app reads columns of later migrations, 0009's among them),
    # as 0007 leaves a database where the extension could not be created: no extension, so
    # no column either (CASCADE drops faces.vector and its indexes with the type).
    await upgrade_async(pgvector_url)
    await execute(pgvector_url, "DROP EXTENSION vector CASCADE")
    reason = await start_up_error(pgvector_settings(pgvector_url), caplog)
    assert "no `vector` extension" in reason
    await execute(pgvector_url, "CREATE EXTENSION vector")  # the extension, still no column
    reason = await start_up_error(pgvector_settings(pgvector_url), caplog)
    assert "faces.vector is missing" in reason


async def test_column_of_another_size_is_a_start_up_error_until_resized(
    pgvector_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FACESVC_PGVECTOR_DIM", "512")  # as if sized for a 512-d embedder
    await upgrade_async(pgvector_url)
    monkeypatch.delenv("FACESVC_PGVECTOR_DIM")
    reason = await start_up_error(pgvector_settings(pgvector_url), caplog)
    assert "512-d vectors" in reason
    assert "makes 128-d ones" in reason
    assert "--resize" in reason

    engine = create_engine(pgvector_url)
    try:
        with pytest.raises(VectorColumnError, match="--resize"):
            await fill_vectors(
                create_sessionmaker(engine), EmbeddingCipher.from_setting(DATA_KEY), "facenet", 128
            )
    finally:
        await engine.dispose()
    # the command the start-up error names, as an operator runs it
    env = {
        **os.environ,
        "FACESVC_DATABASE_URL": pgvector_url,
        "FACESVC_ENCRYPTION_KEY": DATA_KEY,
        "FACESVC_DATA_DIR": str(DATA_DIR),
    }
    refused = await cli(["gallery", "pgvector-fill"], env)
    assert refused.returncode == 2, refused.stderr
    assert "pass --resize" in refused.stderr
    resized = await cli(["gallery", "pgvector-fill", "--resize"], env)
    assert resized.returncode == 0, resized.stderr
    assert "128-d, resized" in resized.stdout
    assert "HNSW index built" in resized.stdout
    async with running_app(pgvector_settings(pgvector_url)) as app:
        assert app.state.facesvc.gallery.name == "pgvector"


# --- switching an existing gallery to pgvector --------------------------------------------


async def test_faces_enrolled_before_the_switch_are_filled_in(
    pgvector_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(pgvector_settings(pgvector_db, backend="exact")) as app, api(app) as c:
        user_id = await create_user(c, "Before switch")
        for number in (1, 2):
            await enrol(c, user_id, "Gerhard_Schroeder", number)
    reason = await start_up_error(pgvector_settings(pgvector_db), caplog)
    assert "2 faces of 'facenet' have no vector" in reason
    assert "pgvector-fill" in reason

    engine = create_engine(pgvector_db)
    try:
        seen: list[tuple[int, int]] = []
        report = await fill_vectors(
            create_sessionmaker(engine),
            EmbeddingCipher.from_setting(DATA_KEY),
            "facenet",
            128,
            batch=1,
            progress=lambda done, total: seen.append((done, total)),
        )
        assert report.filled == 2
        assert seen == [(1, 2), (2, 2)]
    finally:
        await engine.dispose()
    async with running_app(pgvector_settings(pgvector_db)) as app, api(app) as c:
        found = await c.post("/v1/identify", files=image_file(lfw_image("Gerhard_Schroeder", 3)))
        assert found.status_code == 200, found.text
        assert found.json()["match"] == user_id


# --- the session app on pgvector ----------------------------------------------------------


def require_pgvector(settings: Settings) -> None:
    if settings.gallery_backend != "pgvector":
        pytest.skip("runs on the pgvector backend only")


async def test_a_face_committed_through_one_replica_is_found_through_another(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    """Two app instances on one database (two API replicas): what one commits, the other's
    next identify finds, with no reload and no gallery held by either."""
    require_pgvector(settings)
    other = create_app(settings)
    async with LifespanManager(other, startup_timeout=60, shutdown_timeout=30), api(other) as c2:
        await other.state.facesvc.models_ready.wait()
        assert other.state.facesvc.gallery.size() is None
        assert app.state.facesvc.gallery.size() is None
        probe = image_file(lfw_image("Juan_Carlos_Ferrero", 3))
        before = (await c2.post("/v1/identify", files=probe)).json()
        user = (await client.post("/v1/users", json={"name": "Juan Carlos Ferrero"})).json()
        assert before["match"] != user["id"]
        face = await client.post(
            f"/v1/users/{user['id']}/faces",
            files=image_file(lfw_image("Juan_Carlos_Ferrero", 1)),
            data={"consent": "true"},
        )
        assert face.status_code == 201, face.text
        found = (await c2.post("/v1/identify", files=probe)).json()
        assert found["match"] == user["id"]
        # the vector is the encrypted embedding, bit for bit: the similarity is exact
        state: AppState = app.state.facesvc
        face_id = uuid.UUID(face.json()["face_id"])
        async with session_scope(state.sessionmaker) as session:
            ids, matrix = await FaceRepository(session, state.cipher).embeddings_for_user(
                uuid.UUID(user["id"]), state.pipeline.embedding_space
            )
        assert ids == [face_id]
        assert np.array_equal(await stored_vector(state, face_id), matrix[0])

        assert (await c2.delete(f"/v1/users/{user['id']}")).status_code == 204
        gone = (await client.post("/v1/identify", files=probe)).json()
        assert gone["match"] != user["id"]
        assert user["id"] not in {c["user_id"] for c in gone["candidates"]}


async def test_erasure_removes_the_vector_from_the_table_and_index_files(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    """DELETE removes the row (vector included) in its transaction; once VACUUM FULL has
    rewritten the table and its indexes, the plaintext vector's bytes are in neither file."""
    require_pgvector(settings)
    state: AppState = app.state.facesvc
    kept = await create_user(client, "Kept person")  # files not empty
    kept_face = await enrol(client, kept, "George_W_Bush", 1)
    kept_vector = await stored_vector(state, uuid.UUID(str(kept_face["face_id"])))
    user_id = await create_user(client, "Erased person")
    face = await enrol(client, user_id, "Gloria_Macapagal_Arroyo", 1)
    face_id = uuid.UUID(str(face["face_id"]))
    vector = (await stored_vector(state, face_id)).astype("<f4").tobytes()
    assert (await client.delete(f"/v1/users/{user_id}")).status_code == 204
    async with state.engine.connect() as conn:
        left = await conn.execute(
            text("SELECT count(*) FROM faces WHERE id = :f").bindparams(
                bindparam("f", face_id, type_=Uuid)
            )
        )
        assert left.scalar_one() == 0
    async with state.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM FULL faces"))
        await conn.execute(text("CHECKPOINT"))  # the rewritten pages from memory to the files
        folder = Path(str((await conn.execute(text("SHOW data_directory"))).scalar_one()))
        files = [
            str(
                (
                    await conn.execute(text(f"SELECT pg_relation_filepath('{relation}')"))
                ).scalar_one()
            )
            for relation in ("faces", "ix_faces_vector_hnsw")
        ]
    for relative in files:
        path = folder / relative  # and its 1 GB segments (path.1, ...), not _fsm or _vm
        segments = [
            p
            for p in path.parent.iterdir()
            if p.name == path.name or p.name.startswith(f"{path.name}.")
        ]
        raw = b"".join(p.read_bytes() for p in segments)
        assert kept_vector.astype("<f4").tobytes()[:64] in raw, relative  # the check can fail
        assert vector[:64] not in raw, f"the erased vector is still in {relative}"
    assert (await client.delete(f"/v1/users/{kept}")).status_code == 204
