"""Bulk enrolment: several photos in one request, each succeeding or failing on its own."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.api import assert_problem
from tests.support.data import lfw_image


async def test_bulk_enrol_reports_each_photo(client: httpx.AsyncClient, data_dir: Path) -> None:
    user = (await client.post("/v1/users", json={"name": "George W Bush"})).json()
    dogs = (data_dir / "dlib_faces" / "dogs.jpg").read_bytes()
    files = [
        ("images", ("a.jpg", lfw_image("George_W_Bush", 1), "image/jpeg")),
        ("images", ("dogs.jpg", dogs, "image/jpeg")),
        ("images", ("b.jpg", lfw_image("George_W_Bush", 2), "image/jpeg")),
        ("images", ("notes.txt", b"not an image", "text/plain")),
    ]
    response = await client.post(
        f"/v1/users/{user['id']}/faces/bulk", files=files, data={"consent": "true"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enrolled"] == 2
    assert body["failed"] == 2
    items = body["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3]
    assert items[0]["face"]["user_id"] == user["id"]
    assert items[2]["face"]["user_id"] == user["id"]
    assert items[1]["problem"]["type"] == "/problems/no-face"
    assert items[3]["problem"]["type"] == "/problems/unsupported-image-type"
    assert items[3]["problem"]["status"] == 415
    listed = (await client.get(f"/v1/users/{user['id']}/faces")).json()["items"]
    assert {f["face_id"] for f in listed} == {
        items[0]["face"]["face_id"],
        items[2]["face"]["face_id"],
    }
    verified = await client.post(
        f"/v1/users/{user['id']}/verify", files={"image": lfw_image("George_W_Bush", 3)}
    )
    assert verified.json()["match"] is True


async def test_bulk_enrol_limits(client: httpx.AsyncClient) -> None:
    user = (await client.post("/v1/users", json={"name": "Too many"})).json()
    files = [("images", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(33)]
    assert_problem(
        await client.post(
            f"/v1/users/{user['id']}/faces/bulk", files=files, data={"consent": "true"}
        ),
        422,
        "validation-error",
    )
    assert_problem(
        await client.post(
            f"/v1/users/{user['id']}/faces/bulk", files={"image": b"x"}, data={"consent": "true"}
        ),
        422,
        "validation-error",
    )
