"""Bad input gives 4xx problem+json with a stable type, never a 500."""

from __future__ import annotations

import uuid

import cv2
import httpx
import numpy as np
import pytest

from tests.support.api import assert_problem
from tests.support.data import image_file, lfw_image


def _png(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    return bytes(buf.tobytes())


@pytest.mark.parametrize(
    ("data", "status", "slug"),
    [
        (b"", 400, "empty-image"),
        (b"hello, this is plain text and not an image at all", 415, "unsupported-image-type"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", 415, "unsupported-image-type"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00garbage", 400, "corrupt-image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 400, "corrupt-image"),
    ],
    ids=["empty", "text", "pdf", "broken-jpeg", "truncated-png-header"],
)
async def test_bad_uploads_are_problems(
    client: httpx.AsyncClient, data: bytes, status: int, slug: str
) -> None:
    for route in ("/v1/detect", "/v1/embed", "/v1/identify", "/face_detect"):
        assert_problem(await client.post(route, files=image_file(data)), status, slug)


async def test_truncated_jpeg_body_is_corrupt_or_decodes(client: httpx.AsyncClient) -> None:
    data = lfw_image("Colin_Powell", 1)[:400]  # header intact, pixels cut
    response = await client.post("/v1/detect", files=image_file(data))
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert_problem(response, 400, "corrupt-image")


async def test_decompression_bomb_refused_from_header(client: httpx.AsyncClient) -> None:
    # 9000 x 9000 = 81 MP: over the 40 MP default, refused before decoding
    assert_problem(
        await client.post("/v1/detect", files=image_file(_png(9000, 9000), "big.png", "image/png")),
        413,
        "image-too-large",
    )


async def test_missing_image_field_is_validation_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(
        await client.post("/v1/detect", files={"photo": ("a.jpg", b"x", "image/jpeg")}),
        422,
        "validation-error",
    )
    assert body["errors"]


async def test_no_face_on_enrol_and_verify(client: httpx.AsyncClient) -> None:
    blank = _png(200, 200)
    user = (await client.post("/v1/users", json={"name": "Nobody"})).json()
    assert_problem(
        await client.post(
            f"/v1/users/{user['id']}/faces",
            files=image_file(blank, "b.png", "image/png"),
            data={"consent": "true"},
        ),
        422,
        "no-face",
    )
    assert_problem(
        await client.post("/v1/identify", files=image_file(blank, "b.png", "image/png")),
        422,
        "no-face",
    )


async def test_unknown_ids_and_bad_ids(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    assert_problem(await client.get(f"/v1/users/{missing}"), 404, "user-not-found")
    assert_problem(await client.delete(f"/v1/users/{missing}"), 404, "user-not-found")
    # verify does not say whether a user exists: a failed verification, like a wrong face
    unknown = await client.post(
        f"/v1/users/{missing}/verify", files=image_file(lfw_image("Colin_Powell", 1))
    )
    assert unknown.status_code == 200, unknown.text
    assert unknown.json()["match"] is False
    assert_problem(await client.get("/v1/users/not-a-uuid"), 422, "validation-error")
    assert_problem(await client.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(await client.get("/v1/users", params={"limit": 0}), 422, "validation-error")
    assert_problem(await client.get("/v1/users", params={"limit": 100000}), 422, "validation-error")


async def test_user_body_validation(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/users", json={}), 422, "validation-error")
    assert_problem(await client.post("/v1/users", json={"name": "   "}), 422, "validation-error")
    assert_problem(
        await client.post("/v1/users", json={"name": "x" * 201}), 422, "validation-error"
    )
    assert_problem(
        await client.post("/v1/users", json={"name": "a", "metadata": {"k": "v" * 5000}}),
        422,
        "validation-error",
    )
    assert_problem(
        await client.post(
            "/v1/users", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "validation-error",
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    [
        ("patch", "/v1/tenant", b'{"require_liveness": \xff}', "application/json"),
        ("post", "/v1/jobs/detect", b"no parts at all", "multipart/form-data; boundary=x"),
    ],
    ids=["json-not-utf8", "malformed-multipart"],
)
async def test_an_unparsable_body_is_a_documented_400(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, content_type: str
) -> None:
    """The framework answers 400 before the route runs, as a problem type of its own
    (schemathesis found both operations answering it while the schema listed no 400)."""
    response = await client.request(
        method, path, content=body, headers={"content-type": content_type}
    )
    body = assert_problem(response, 400, "malformed-body")
    assert body["detail"]  # what the parser said
    schema = (await client.get("/openapi.json")).json()
    assert "400" in schema["paths"][path][method]["responses"]


async def test_problem_types_are_documented(client: httpx.AsyncClient) -> None:
    response = await client.get("/problems/no-face")
    assert response.status_code == 200
    assert response.json()["title"] == "No face found"
    assert_problem(await client.get("/problems/nope"), 404, "not-found")
