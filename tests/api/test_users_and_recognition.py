"""Users with several faces each, verification, identification and comparison on LFW."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.support.api import assert_problem, create_user, enrol
from tests.support.data import image_file, lfw_image


@pytest.fixture(scope="module")
async def gallery(client: httpx.AsyncClient) -> dict[str, str]:
    """Three people with two faces each."""
    people = {}
    for name in ("Colin_Powell", "Tony_Blair", "Serena_Williams"):
        user_id = await create_user(client, name.replace("_", " "), external_id=f"lfw:{name}")
        for number in (1, 2):
            await enrol(client, user_id, name, number)
        people[name] = user_id
    return people


async def test_user_crud_and_faces(client: httpx.AsyncClient, gallery: dict[str, str]) -> None:
    user_id = gallery["Colin_Powell"]
    body = (await client.get(f"/v1/users/{user_id}")).json()
    assert body["face_count"] == 2
    assert body["external_id"] == "lfw:Colin_Powell"
    faces = (await client.get(f"/v1/users/{user_id}/faces")).json()["items"]
    assert len(faces) == 2
    assert faces[0]["model"]["name"] == "facenet"
    assert faces[0]["image"] == {"width": 250, "height": 250}

    page = (await client.get("/v1/users", params={"limit": 2, "offset": 0})).json()
    assert page["limit"] == 2
    assert len(page["items"]) <= 2
    assert page["total"] >= 3


async def test_duplicate_external_id_conflicts(
    client: httpx.AsyncClient, gallery: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/users", json={"name": "Other", "external_id": "lfw:Tony_Blair"}
    )
    assert_problem(response, 409, "duplicate-external-id")


async def test_genuine_verifies_and_impostor_does_not(
    client: httpx.AsyncClient, gallery: dict[str, str]
) -> None:
    user_id = gallery["Colin_Powell"]
    genuine = await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Colin_Powell", 3))
    )
    assert genuine.status_code == 200, genuine.text
    g = genuine.json()
    assert g["match"] is True
    assert g["similarity"] >= g["threshold"]
    assert g["faces_compared"] == 2
    assert abs(g["distance"] - (2 - 2 * g["similarity"]) ** 0.5) < 1e-4

    impostor = await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Serena_Williams", 3))
    )
    i = impostor.json()
    assert i["match"] is False
    # no score on a failed verification by default (no hill-climbing on the score)
    assert (i["similarity"], i["distance"], i["face_id"], i["faces_compared"]) == (
        None,
        None,
        None,
        None,
    )
    assert i["threshold"] == g["threshold"]


async def test_identify_finds_the_right_user(
    client: httpx.AsyncClient, gallery: dict[str, str]
) -> None:
    for name in ("Colin_Powell", "Tony_Blair", "Serena_Williams"):
        response = await client.post(
            "/v1/identify", params={"top_k": 3}, files=image_file(lfw_image(name, 4))
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["match"] == gallery[name], body
        users = [c["user_id"] for c in body["candidates"]]
        assert len(users) == len(set(users)), "one candidate per user"
        sims = [c["similarity"] for c in body["candidates"]]
        assert sims == sorted(sims, reverse=True)


async def test_identify_unknown_person_is_null(
    client: httpx.AsyncClient, gallery: dict[str, str]
) -> None:
    response = await client.post("/v1/identify", files=image_file(lfw_image("Hugo_Chavez", 1)))
    body = response.json()
    assert body["match"] is None
    assert body["candidates"], "candidates are still returned"
    assert body["candidates"][0]["similarity"] < body["threshold"]


async def test_compare(client: httpx.AsyncClient) -> None:
    same = await client.post(
        "/v1/compare",
        files={
            "image_a": ("a.jpg", lfw_image("Gerhard_Schroeder", 1), "image/jpeg"),
            "image_b": ("b.jpg", lfw_image("Gerhard_Schroeder", 2), "image/jpeg"),
        },
    )
    assert same.status_code == 200, same.text
    assert same.json()["match"] is True
    different = await client.post(
        "/v1/compare",
        files={
            "image_a": ("a.jpg", lfw_image("Gerhard_Schroeder", 1), "image/jpeg"),
            "image_b": ("b.jpg", lfw_image("Ariel_Sharon", 1), "image/jpeg"),
        },
    )
    assert different.json()["match"] is False


async def test_enrol_refuses_two_similar_faces(client: httpx.AsyncClient, data_dir: object) -> None:
    from tests.support.data import DLIB

    user_id = await create_user(client, "Group photo")
    data = (DLIB / "2008_002506.jpg").read_bytes()  # three faces of about the same size
    response = await client.post(
        f"/v1/users/{user_id}/faces", files=image_file(data), data={"consent": "true"}
    )
    body = assert_problem(response, 422, "multiple-faces")
    assert body["faces"] == 3


async def test_verify_without_faces_and_face_deletion(client: httpx.AsyncClient) -> None:
    user_id = await create_user(client, "Ariel Sharon")
    no_faces = await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Ariel_Sharon", 2))
    )
    assert no_faces.status_code == 200, no_faces.text
    assert no_faces.json()["match"] is False
    face = await enrol(client, user_id, "Ariel_Sharon", 1)
    verified = await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Ariel_Sharon", 2))
    )
    assert verified.json()["face_id"] == face["face_id"]
    assert (await client.delete(f"/v1/users/{user_id}/faces/{face['face_id']}")).status_code == 204
    assert_problem(
        await client.delete(f"/v1/users/{user_id}/faces/{face['face_id']}"), 404, "face-not-found"
    )
    assert (await client.get(f"/v1/users/{user_id}")).json()["face_count"] == 0


async def test_delete_user_removes_faces_from_identification(client: httpx.AsyncClient) -> None:
    user_id = await create_user(client, "Hugo Chavez temp")
    await enrol(client, user_id, "Hugo_Chavez", 1)
    found = (
        await client.post("/v1/identify", files=image_file(lfw_image("Hugo_Chavez", 2)))
    ).json()
    assert found["match"] == user_id
    assert (await client.delete(f"/v1/users/{user_id}")).status_code == 204
    assert_problem(await client.get(f"/v1/users/{user_id}/faces"), 404, "user-not-found")
    found = (
        await client.post("/v1/identify", files=image_file(lfw_image("Hugo_Chavez", 2)))
    ).json()
    assert found["match"] != user_id
    assert user_id not in [c["user_id"] for c in found["candidates"]]


async def test_an_enrolment_is_written_by_the_group_writer_where_there_is_one(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """On SQLite a single enrolment's rows go through the worker's group writer (one
    operation), answered after its commit; a legacy register, whose request has already
    created the user, stores the face in its own transaction (handing it over would wait on
    its own lock). On PostgreSQL there is no group writer: the request's transaction."""
    writer = app.state.facesvc.writer
    before = getattr(writer, "operations", 0)
    user = (await client.post("/v1/users", json={"name": "Writer enrol"})).json()["id"]
    enrolled = await client.post(
        f"/v1/users/{user}/faces",
        files=image_file(lfw_image("Tony_Blair", 1)),
        data={"consent": "true"},
    )
    assert enrolled.status_code == 201, enrolled.text
    listed = (await client.get(f"/v1/users/{user}/faces")).json()["items"]
    assert [face["face_id"] for face in listed] == [enrolled.json()["face_id"]]
    after_enrol = getattr(writer, "operations", 0)
    assert after_enrol - before == (1 if writer.groups else 0)
    registered = await client.post(
        "/face_register",
        data={"name": "Writer legacy", "consent": "true"},
        files=image_file(lfw_image("Tony_Blair", 2)),
    )
    assert registered.status_code == 200, registered.text
    assert getattr(writer, "operations", 0) == after_enrol
    audit = (await client.get("/v1/audit", params={"action": "face.enrol", "user_id": user})).json()
    assert [row["result"] for row in audit["items"]] == ["ok"]


async def test_legacy_routes(client: httpx.AsyncClient) -> None:
    registered = await client.post(
        "/face_register",
        data={"name": "Capriati legacy", "consent": "true"},
        files=image_file(lfw_image("Jennifer_Capriati", 1)),
    )
    assert registered.status_code == 200, registered.text
    login = await client.post(
        "/face_login",
        data={"name": "Capriati legacy"},
        files=image_file(lfw_image("Jennifer_Capriati", 2)),
    )
    assert login.json()["match"] is True
    wrong = await client.post(
        "/face_login",
        data={"name": "Capriati legacy"},
        files=image_file(lfw_image("Colin_Powell", 6)),
    )
    assert wrong.json()["match"] is False
    nobody = await client.post(
        "/face_login",
        data={"name": "nobody at all"},
        files=image_file(lfw_image("Colin_Powell", 6)),
    )
    assert nobody.status_code == 200, nobody.text
    assert nobody.json() == wrong.json()  # an unknown name answers like a wrong face
    detected = await client.post("/face_detect", files=image_file(lfw_image("Colin_Powell", 6)))
    assert len(detected.json()["faces"]) >= 1
    uploaded = await client.post("/upload", files=image_file(lfw_image("Colin_Powell", 6)))
    assert uploaded.json() == detected.json()
    marks = await client.post("/face_landmark", files=image_file(lfw_image("Colin_Powell", 6)))
    assert len(marks.json()["faces"][0]["mesh"]) == 468
    # the seed read images from a server path named in the query string: never here
    path_attempt = await client.post("/face_detect", params={"path": "/etc/passwd"})
    assert_problem(path_attempt, 422, "validation-error")


async def test_the_seed_tutorials_requests_get_useful_answers(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    """The tutorial's clients, replayed as they send: the photo in the multipart field
    ``file`` (``request.files.get('file')``), the name as a form field, images for detection
    named by a server path in the query string (``GET /face_detect?url=...``)."""

    def seed_file(person: str, number: int) -> dict[str, tuple[str, bytes, str]]:
        return {"file": ("photo.jpg", lfw_image(person, number), "image/jpeg")}

    registered = await client.post(
        "/face_register",
        data={"name": "Seed client", "consent": "true"},
        files=seed_file("Gerhard_Schroeder", 1),
    )
    assert registered.status_code == 200, registered.text
    login = await client.post(
        "/face_login", data={"name": "Seed client"}, files=seed_file("Gerhard_Schroeder", 2)
    )
    assert login.status_code == 200, login.text
    assert login.json()["match"] is True
    stranger = await client.post(
        "/face_login", data={"name": "Seed client"}, files=seed_file("Colin_Powell", 6)
    )
    assert stranger.json()["match"] is False
    uploaded = await client.post("/upload", files=seed_file("Colin_Powell", 6))
    assert len(uploaded.json()["faces"]) >= 1
    marks = await client.post("/face_landmark", files=seed_file("Colin_Powell", 6))
    assert len(marks.json()["faces"][0]["mesh"]) == 468
    # the tutorial's server-path reads: told what to do instead, API key or not
    for path in ("/face_detect", "/face_landmark", "/upload"):
        for caller in (client, anonymous):
            gone = await caller.get(path, params={"url": "/etc/passwd"})
            body = assert_problem(gone, 410, "uploads-only")
            assert "POST" in str(body["detail"])
    described = (await anonymous.get("/problems/uploads-only")).json()
    assert "server path" in described["description"]
    # one photo per request, under either name
    both = await client.post(
        "/face_detect",
        files={**seed_file("Colin_Powell", 6), **image_file(lfw_image("Colin_Powell", 6))},
    )
    assert_problem(both, 422, "validation-error")
    assert_problem(await client.post("/face_detect", data={"x": "1"}), 422, "validation-error")


async def test_openapi_marks_legacy_deprecated(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["paths"]["/face_login"]["post"]["deprecated"] is True
    assert "deprecated" not in schema["paths"]["/v1/identify"]["post"]
    assert "ApiKey" in schema["components"]["securitySchemes"]
