"""The API keeps the 1:N index in step with SQL, and sheds load with 503 when a queue is full."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from facesvc.container import AppState
from facesvc.db.engine import session_scope
from facesvc.errors import QueueFullError
from facesvc.gallery.sync import GallerySync
from facesvc.repositories.faces import FaceRepository
from tests.support.api import assert_problem
from tests.support.data import image_file, lfw_image


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
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue itself is tested on a bare runner (tests/unit/test_batching.py), the problem
    it maps to by problem_response (tests/unit/test_problem_catalogue.py). This is the way
    between them: a full model queue under a real route reaches the client as the 503
    ``overloaded`` problem with Retry-After and the model's name, not as a 500 on the way."""
    runner = app.state.facesvc.registry.detector

    async def full(batch: object) -> object:
        raise QueueFullError(runner.name, 2, 1)

    monkeypatch.setattr(runner, "run", full)
    refused = await client.post("/v1/embed", files=image_file(lfw_image("Colin_Powell", 7)))
    body = assert_problem(refused, 503, "overloaded")
    assert refused.headers["retry-after"] == "1"
    assert body["model"] == runner.name
