"""A real ``facesvc serve`` process: probes, docs, the whole user flow, concurrency, errors.

The session's shared server (``live_server``, tests/support/servers.py: loading the models takes
seconds), on its own SQLite file, migrated by ``facesvc db upgrade`` as an operator would. It
must stop cleanly on SIGTERM: checked when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.data import image_file, lfw_image
from tests.support.server_process import ServerProcess
from tests.support.servers import http_client

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


@pytest.fixture
def client(live_server: ServerProcess) -> Iterator[httpx.Client]:
    with http_client(live_server) as c:
        yield c


def create_user(client: httpx.Client, name: str) -> str:
    response = client.post("/v1/users", json={"name": name.replace("_", " "), "external_id": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def enrol(client: httpx.Client, user_id: str, name: str, *numbers: int) -> None:
    for number in numbers:
        response = client.post(
            f"/v1/users/{user_id}/faces",
            files=image_file(lfw_image(name, number)),
            data={"consent": "true"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == user_id


def test_probes(client: httpx.Client) -> None:
    live = client.get("/livez")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert body["database"] == "ok"
    assert len(body["models"]) == 6
    assert {m["task"] for m in body["models"]} == {
        "detector",
        "mesh",
        "embedder",
        "age",
        "gender",
        "expression",
    }
    assert all(m["ready"] for m in body["models"]), body["models"]


def test_swagger_ui(client: httpx.Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text.lower()


def test_enrol_verify_identify_delete(client: httpx.Client, data_dir: Path) -> None:
    user_id = create_user(client, "Vladimir_Putin")
    enrol(client, user_id, "Vladimir_Putin", 1, 2)

    genuine = client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Vladimir_Putin", 3))
    )
    assert genuine.status_code == 200, genuine.text
    g = genuine.json()
    assert g["match"] is True, g
    assert g["faces_compared"] == 2

    impostor = client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Laura_Bush", 1))
    )
    assert impostor.status_code == 200, impostor.text
    i = impostor.json()
    assert i["match"] is False, i
    assert i["similarity"] is None  # no score on a failed verification (hill-climbing)

    probe = image_file(lfw_image("Vladimir_Putin", 4))
    found = client.post("/v1/identify", files=probe)
    assert found.status_code == 200, found.text
    assert found.json()["match"] == user_id, found.json()

    assert client.delete(f"/v1/users/{user_id}").status_code == 204
    assert client.get(f"/v1/users/{user_id}").status_code == 404
    gone = client.post("/v1/identify", files=probe)
    assert gone.status_code == 200, gone.text
    assert gone.json()["match"] != user_id
    assert user_id not in [c["user_id"] for c in gone.json()["candidates"]]


def test_parallel_verifications_agree(client: httpx.Client, data_dir: Path) -> None:
    user_id = create_user(client, "Junichiro_Koizumi")
    enrol(client, user_id, "Junichiro_Koizumi", 1, 2)
    probe = image_file(lfw_image("Junichiro_Koizumi", 3))

    def verify(_: int) -> httpx.Response:
        return client.post(f"/v1/users/{user_id}/verify", files=probe)

    # 5 at once: the lockout admits at most 5 unresolved attempts per user id at a time
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(verify, range(5)))

    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    similarities = [r.json()["similarity"] for r in responses]
    assert all(r.json()["match"] is True for r in responses)
    # Requests batched together may differ in the last float bits, never more.
    assert max(similarities) - min(similarities) <= 1e-5, similarities


def test_non_image_upload_is_415_problem(client: httpx.Client) -> None:
    response = client.post(
        "/v1/detect", files=image_file(b"plain text, not a photo", "notes.txt", "text/plain")
    )
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "/problems/unsupported-image-type"
    assert body["status"] == 415
