"""Detection, landmarks and embeddings on real photos through the HTTP API."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from tests.support.data import image_file, lfw_image


async def test_detect_finds_no_face_on_dogs(client: httpx.AsyncClient, data_dir: Path) -> None:
    data = (data_dir / "dlib_faces" / "dogs.jpg").read_bytes()
    response = await client.post("/v1/detect", files=image_file(data))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["faces"] == []
    assert body["image"]["width"] > 0


async def test_detect_finds_several_faces_on_bald_guys(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    data = (data_dir / "dlib_faces" / "bald_guys.jpg").read_bytes()
    response = await client.post("/v1/detect", files=image_file(data))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 1986, "height": 1545}
    faces = body["faces"]
    assert len(faces) >= 10
    areas = [f["box"]["width"] * f["box"]["height"] for f in faces]
    assert areas == sorted(areas, reverse=True), "faces come largest first"
    for face in faces:
        box, points = face["box"], face["landmarks"]
        assert 0.5 <= face["score"] <= 1.0
        # every landmark lies inside (or just around) its face box, in original pixels
        for name in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"):
            x, y = points[name]
            assert box["x"] - 0.2 * box["width"] <= x <= box["x"] + 1.2 * box["width"]
            assert box["y"] - 0.2 * box["height"] <= y <= box["y"] + 1.2 * box["height"]
        assert points["left_eye"][0] < points["right_eye"][0]
        assert points["mouth_left"][0] < points["mouth_right"][0]
        assert points["left_eye"][1] < points["mouth_left"][1]


async def test_landmarks_dense_gives_468_points(client: httpx.AsyncClient, data_dir: Path) -> None:
    response = await client.post(
        "/v1/landmarks", params={"dense": "true"}, files=image_file(lfw_image("Colin_Powell", 1))
    )
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert faces
    mesh = np.array(faces[0]["mesh"])
    assert mesh.shape == (468, 3)
    box = faces[0]["box"]
    inside = (
        (mesh[:, 0] >= box["x"] - 10)
        & (mesh[:, 0] <= box["x"] + box["width"] + 10)
        & (mesh[:, 1] >= box["y"] - 25)
        & (mesh[:, 1] <= box["y"] + box["height"] + 10)
    )
    assert inside.mean() > 0.95


async def test_landmarks_without_dense_has_no_mesh(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    response = await client.post("/v1/landmarks", files=image_file(lfw_image("Colin_Powell", 1)))
    assert response.status_code == 200
    assert response.json()["faces"][0]["mesh"] is None


async def test_embed_is_128d_normalised_and_same_person_is_closer(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    async def embedding(name: str, number: int) -> np.ndarray:
        response = await client.post("/v1/embed", files=image_file(lfw_image(name, number)))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["name"] == "facenet"
        face = body["faces"][0]
        assert face["model"] == "facenet"
        return np.array(face["embedding"])

    a1, a2 = await embedding("Colin_Powell", 1), await embedding("Colin_Powell", 2)
    b1 = await embedding("Tony_Blair", 1)
    assert a1.shape == (128,)
    assert abs(np.linalg.norm(a1) - 1.0) < 1e-4
    assert a1 @ a2 > a1 @ b1 + 0.2
