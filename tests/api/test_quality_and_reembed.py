"""The enrolment quality gate (problem type per reason, quality stored per face) and
re-embedding after a model change from the kept, encrypted face crops."""

from __future__ import annotations

import uuid

import cv2
import httpx
import numpy as np
from fastapi import FastAPI
from sqlalchemy import Uuid, bindparam, text, update

from facesvc.container import AppState
from facesvc.db.engine import session_scope
from facesvc.db.models import DEFAULT_TENANT_ID, Face
from facesvc.repositories.faces import FaceRepository
from facesvc.security.keys import Caller
from facesvc.services.enrolment import EnrolmentOptions, EnrolmentService
from facesvc.services.reembed import reembed_stale_faces, stale_face_counts
from tests.support.api import assert_problem
from tests.support.data import image_file, lfw_image


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(data.tobytes())


def decoded(name: str, number: int) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(lfw_image(name, number), np.uint8), cv2.IMREAD_COLOR)


async def test_quality_gate_refuses_blur_and_tiny_faces(client: httpx.AsyncClient) -> None:
    user = (await client.post("/v1/users", json={"name": "Quality gate"})).json()
    url = f"/v1/users/{user['id']}/faces"
    sharp = decoded("Alvaro_Uribe", 1)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 5)
    response = await client.post(url, files=image_file(jpeg(blurred)), data={"consent": "true"})
    body = assert_problem(response, 422, "face-too-blurry")
    assert body["quality"]["sharpness"] < 500  # type: ignore[index]
    # a face of ~20 px: small, but still found by the detector
    small = cv2.resize(sharp, (40, 40), interpolation=cv2.INTER_AREA)
    canvas = np.full((250, 250, 3), 127, np.uint8)
    canvas[100:140, 100:140] = small
    tiny = await client.post(url, files=image_file(jpeg(canvas)), data={"consent": "true"})
    if tiny.status_code != 422 or tiny.json()["type"] != "/problems/no-face":
        assert_problem(tiny, 422, "face-too-small")
    ok = await client.post(url, files=image_file(jpeg(sharp)), data={"consent": "true"})
    assert ok.status_code == 201, ok.text
    assert 0.5 <= ok.json()["quality"] <= 1.0  # stored with the face
    listed = (await client.get(url)).json()["items"]
    assert [f["quality"] for f in listed] == [ok.json()["quality"]]
    assert (await client.delete(f"/v1/users/{user['id']}")).status_code == 204


async def test_model_change_is_detected_and_reembed_recomputes_from_crops(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    state: AppState = app.state.facesvc
    space = state.pipeline.embedding_space
    user = (await client.post("/v1/users", json={"name": "Reembed person"})).json()
    user_id = uuid.UUID(user["id"])
    caller = Caller.operator(DEFAULT_TENANT_ID)
    async with session_scope(state.sessionmaker) as session:  # as with STORE_FACE_CROPS=true
        enrolment = EnrolmentService(
            session, state.analysis, state.gallery, caller, EnrolmentOptions(keep_crops=True)
        )
        with_crop = await enrolment.enrol(user_id, lfw_image("Ricardo_Lagos", 1), consent=True)
    async with session_scope(state.sessionmaker) as session:
        enrolment = EnrolmentService(session, state.analysis, state.gallery, caller)
        without_crop = await enrolment.enrol(user_id, lfw_image("Ricardo_Lagos", 2), consent=True)
    async with session_scope(state.sessionmaker) as session:
        _, before = await FaceRepository(session, state.cipher).embeddings_for_user(user_id, space)
    # the crop is stored encrypted: its JPEG header is nowhere in the row
    async with state.engine.connect() as conn:
        raw = (
            await conn.execute(
                text("SELECT crop FROM faces WHERE id = :f").bindparams(
                    bindparam("f", with_crop.id, type_=Uuid)
                )
            )
        ).scalar_one()
    assert raw is not None
    assert b"\xff\xd8\xff" not in bytes(raw)[:64]

    # "a model change": these faces now look as if another embedder had stored them
    async with session_scope(state.sessionmaker) as session:
        await session.execute(
            update(Face).where(Face.user_id == user_id).values(model_name="old-model")
        )
    counts = await stale_face_counts(state.sessionmaker, state.cipher, space)
    assert counts.get("old-model") == 2
    verify = await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Ricardo_Lagos", 3))
    )
    assert verify.json()["match"] is False  # other models' faces are never compared

    report = await reembed_stale_faces(
        state.sessionmaker, state.cipher, state.analysis, state.gallery
    )
    assert report.reembedded >= 1
    assert report.without_crop >= 1
    async with session_scope(state.sessionmaker) as session:
        ids, after = await FaceRepository(session, state.cipher).embeddings_for_user(user_id, space)
    assert ids == [with_crop.id]  # the face without a crop stays out until re-enrolled
    assert float(after[0] @ before[0]) > 0.9  # the same face, found again in its crop
    if state.gallery.name == "pgvector":  # faces.vector follows the encrypted column
        from tests.support.pg import stored_vector

        assert np.array_equal(await stored_vector(state, with_crop.id), after[0])
    assert without_crop.id not in ids
    verify = await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Ricardo_Lagos", 3))
    )
    assert verify.json()["match"] is True
    assert (await client.delete(f"/v1/users/{user_id}")).status_code == 204
