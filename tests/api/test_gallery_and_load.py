"""The API keeps the 1:N index in step with SQL, and sheds load with 503 when a queue is full."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facesvc.app import create_app
from facesvc.container import AppState
from facesvc.db.engine import session_scope
from facesvc.gallery.sync import GallerySync
from facesvc.repositories.faces import FaceRepository
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, assert_problem
from tests.support.data import image_file, lfw_image
from tests.support.gates import eventually, gated


async def sql_face_ids(state: AppState) -> set[object]:
    async with session_scope(state.sessionmaker) as session:
        face_ids, _, _, _ = await FaceRepository(session, state.cipher).all_embeddings("facenet")
    return set(face_ids)


async def test_index_follows_enrol_and_delete_without_reloading(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    state: AppState = app.state.facesvc
    if not isinstance(state.gallery, GallerySync):
        pytest.skip("the pgvector backend keeps no index (tests/api/test_pgvector.py)")
    await client.post("/v1/identify", files=image_file(lfw_image("Laura_Bush", 1)))  # sync once
    index = state.gallery.index
    reloads = index.reloads
    user = (await client.post("/v1/users", json={"name": "Laura Bush"})).json()
    faces = []
    for number in (1, 2, 3):
        response = await client.post(
            f"/v1/users/{user['id']}/faces",
            files=image_file(lfw_image("Laura_Bush", number)),
            data={"consent": "true"},
        )
        assert response.status_code == 201, response.text
        faces.append(response.json()["face_id"])
    assert {str(f) for f in await sql_face_ids(state)} >= set(faces)
    assert len(index) == len(await sql_face_ids(state))
    await client.delete(f"/v1/users/{user['id']}/faces/{faces[0]}")
    assert len(index) == len(await sql_face_ids(state))
    found = (await client.post("/v1/identify", files=image_file(lfw_image("Laura_Bush", 4)))).json()
    assert found["match"] == user["id"]
    await client.delete(f"/v1/users/{user['id']}")
    assert len(index) == len(await sql_face_ids(state))
    assert index.reloads == reloads, "changes were applied incrementally"
    found = (await client.post("/v1/identify", files=image_file(lfw_image("Laura_Bush", 4)))).json()
    assert found["match"] != user["id"]


async def test_full_queue_answers_503_with_retry_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One item may wait per model: with the detector held at a gate, the first photo is in
    its call, the second waits, the third is refused at once. Held, not raced: the order
    does not depend on how fast the models are."""
    app = create_app(settings.model_copy(update={"queue_max_items": 1, "batch_max_size": 1}))
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        state: AppState = app.state.facesvc
        await state.models_ready.wait()
        runner = state.registry.detector
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://busy", headers={"X-API-Key": ADMIN_KEY}
        ) as c:
            data = image_file(lfw_image("Colin_Powell", 7))
            with gated(runner, monkeypatch) as gate:
                first = asyncio.ensure_future(c.post("/v1/embed", files=data))
                await eventually(lambda: gate.entered == 1, "the first photo in the model")
                second = asyncio.ensure_future(c.post("/v1/embed", files=data))
                await eventually(lambda: runner.queued_items == 1, "the second photo queued")
                refused = await c.post("/v1/embed", files=data)
            accepted = await asyncio.gather(first, second)
    body = assert_problem(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "1"
    assert body["model"] == runner.name
    assert [r.status_code for r in accepted] == [200, 200], [r.text for r in accepted]
