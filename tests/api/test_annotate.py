"""``annotate=true``: the photo back as PNG with the faces drawn on it."""

from __future__ import annotations

from pathlib import Path

import cv2
import httpx
import numpy as np

from tests.support.data import image_file, lfw_image


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


async def annotated(
    client: httpx.AsyncClient, route: str, data: bytes, **params: str
) -> tuple[httpx.Response, np.ndarray]:
    response = await client.post(
        route, params={"annotate": "true", **params}, files=image_file(data)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
    return response, decode(response.content)


async def test_detect_annotate_draws_the_face_on_the_same_image(client: httpx.AsyncClient) -> None:
    data = lfw_image("Colin_Powell", 1)
    original = decode(data)
    faces = (await client.post("/v1/detect", files=image_file(data))).json()["faces"]
    assert len(faces) == 1

    response, drawn = await annotated(client, "/v1/detect", data)
    assert response.headers["X-Face-Count"] == "1"
    assert drawn.shape == original.shape  # 250 x 250 x 3, same orientation

    changed = np.any(drawn != original, axis=2)
    box = faces[0]["box"]
    x0, y0 = round(box["x"]), round(box["y"])
    x1, y1 = round(box["x"] + box["width"]), round(box["y"] + box["height"])
    inside = changed[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3]
    assert inside.sum() > 2 * (x1 - x0)  # at least the box's outline
    # the box outline itself: its top edge row is drawn along most of its width
    assert changed[max(y0, 0), x0:x1].mean() > 0.8
    # each of the five landmarks is marked
    for x, y in faces[0]["landmarks"].values():
        assert changed[round(y), round(x)], (x, y)
    # away from the face the pixels are the photo's own, untouched (PNG is lossless)
    assert not changed[y1 + 20 :, x1 + 20 :].any()


async def test_detect_annotate_on_a_photo_without_faces_returns_it_unchanged(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    data = (data_dir / "dlib_faces" / "dogs.jpg").read_bytes()
    response, drawn = await annotated(client, "/v1/detect", data)
    assert response.headers["X-Face-Count"] == "0"
    assert np.array_equal(drawn, decode(data))


async def test_landmarks_annotate_dense_also_draws_the_mesh(client: httpx.AsyncClient) -> None:
    data = lfw_image("Colin_Powell", 1)
    original = decode(data)
    _, sparse = await annotated(client, "/v1/landmarks", data)
    _, dense = await annotated(client, "/v1/landmarks", data, dense="true")
    assert dense.shape == sparse.shape == original.shape
    sparse_changed = np.any(sparse != original, axis=2).sum()
    dense_changed = np.any(dense != original, axis=2).sum()
    assert dense_changed > sparse_changed + 468  # one dot per mesh point at least


async def test_annotate_errors_are_still_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/detect", params={"annotate": "true"}, files=image_file(b"not an image", "x.txt")
    )
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_png_answer_is_in_the_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for route in ("/v1/detect", "/v1/landmarks"):
        operation = schema["paths"][route]["post"]
        content = operation["responses"]["200"]["content"]
        assert set(content) == {"application/json", "image/png"}
        assert content["image/png"]["schema"] == {"type": "string", "format": "binary"}
        assert "annotate" in {p["name"] for p in operation["parameters"]}
