"""Age, gender, expression and head pose on real photos through /v1/detect?attributes=...

The default tenant turns age, gender and expression on for each test (they are off by
default: tests/api/test_sensitive_attributes.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from tests.support.data import image_file, lfw_image

pytestmark = pytest.mark.usefixtures("sensitive_attributes")

EXPRESSIONS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


async def detect(client: httpx.AsyncClient, data: bytes, attributes: str | None) -> list[Any]:
    params = {} if attributes is None else {"attributes": attributes}
    response = await client.post("/v1/detect", params=params, files=image_file(data))
    assert response.status_code == 200, response.text
    faces: list[Any] = response.json()["faces"]
    return faces


def mirrored(data: bytes) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    ok, png = cv2.imencode(".png", cv2.flip(image, 1))
    assert ok
    return png.tobytes()


async def test_no_attributes_unless_asked(client: httpx.AsyncClient, data_dir: Path) -> None:
    (face,) = await detect(client, lfw_image("Colin_Powell", 1), None)
    assert face["attributes"] is None


async def test_networks_run_only_for_what_is_asked(
    client: httpx.AsyncClient, app: FastAPI, data_dir: Path
) -> None:
    """Counted model calls, not timed: plain detection and pose run no attribute network."""
    registry = app.state.facesvc.registry
    photo = lfw_image("Colin_Powell", 1)

    async def calls_made(attributes: str | None) -> dict[str, int]:
        before = {task: runner.calls for task, runner in registry.attributes.items()}
        mesh = registry.mesh.calls
        await detect(client, photo, attributes)
        made = {task: runner.calls - before[task] for task, runner in registry.attributes.items()}
        return {**made, "mesh": registry.mesh.calls - mesh}

    nothing = {"age": 0, "gender": 0, "expression": 0}
    mesh = 0 if registry.detector_gives_five_points else 1  # BlazeFace's five points: the mesh
    assert await calls_made(None) == {**nothing, "mesh": mesh}
    assert await calls_made("pose") == {**nothing, "mesh": 1}
    assert await calls_made("age") == {**nothing, "age": 1, "mesh": 1}
    assert await calls_made("all") == {"age": 1, "gender": 1, "expression": 1, "mesh": 1}


async def test_only_what_is_asked(client: httpx.AsyncClient, data_dir: Path) -> None:
    (face,) = await detect(client, lfw_image("Colin_Powell", 1), "Pose, GENDER")
    attributes = face["attributes"]
    assert attributes["age"] is None
    assert attributes["expression"] is None
    assert attributes["gender"]["value"] == "male"
    assert set(attributes["pose"]) == {"yaw", "pitch", "roll"}


# Public people: gender, and an age range around theirs when LFW's news photos were taken
# (2002-2004) that is wide enough for the network's coarse estimate.
KNOWN = [
    ("Serena_Williams", 2, "female", (15, 40)),  # born 1981
    ("Angelina_Jolie", 1, "female", (18, 45)),  # born 1975
    ("Colin_Powell", 1, "male", (45, 80)),  # born 1937
    ("Vladimir_Putin", 2, "male", (35, 70)),  # born 1952
]


@pytest.mark.parametrize(("name", "number", "gender", "ages"), KNOWN)
async def test_all_attributes_of_known_people(
    client: httpx.AsyncClient,
    data_dir: Path,
    name: str,
    number: int,
    gender: str,
    ages: tuple[float, float],
) -> None:
    faces = await detect(client, lfw_image(name, number), "all")
    attributes = faces[0]["attributes"]
    assert attributes["gender"]["value"] == gender
    assert attributes["gender"]["confidence"] > 0.9
    age = attributes["age"]
    assert ages[0] <= age["value"] <= ages[1]
    assert age["low"] <= age["value"] <= age["high"]
    expression = attributes["expression"]
    assert expression["value"] in EXPRESSIONS
    assert set(expression["scores"]) == EXPRESSIONS
    assert sum(expression["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert expression["confidence"] == max(expression["scores"].values())
    assert all(abs(v) <= 90 for v in attributes["pose"].values())


async def test_expression_tells_a_smile_from_a_shout(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    smiling = await detect(client, lfw_image("Serena_Williams", 2), "expression")
    shouting = await detect(client, lfw_image("Serena_Williams", 1), "expression")
    assert smiling[0]["attributes"]["expression"]["value"] == "happy"
    assert shouting[0]["attributes"]["expression"]["value"] == "angry"


async def test_pose_of_a_frontal_face_and_a_turned_one_mirrored(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    frontal = (await detect(client, lfw_image("Tony_Blair", 2), "pose"))[0]["attributes"]["pose"]
    assert abs(frontal["yaw"]) < 10
    assert abs(frontal["roll"]) < 10
    assert abs(frontal["pitch"]) < 20
    photo = lfw_image("Tony_Blair", 1)  # turned towards the image's left
    turned = (await detect(client, photo, "pose"))[0]["attributes"]["pose"]
    flipped = (await detect(client, mirrored(photo), "pose"))[0]["attributes"]["pose"]
    assert turned["yaw"] < -20
    assert flipped["yaw"] > 20
    assert flipped["yaw"] == pytest.approx(-turned["yaw"], abs=5)
    assert flipped["pitch"] == pytest.approx(turned["pitch"], abs=5)


async def test_mirroring_changes_neither_gender_nor_age_much(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    photo = lfw_image("Angelina_Jolie", 1)
    (face,) = await detect(client, photo, "age,gender")
    (other,) = await detect(client, mirrored(photo), "age,gender")
    assert other["attributes"]["gender"]["value"] == face["attributes"]["gender"]["value"]
    assert other["attributes"]["age"]["value"] == pytest.approx(
        face["attributes"]["age"]["value"], abs=8
    )


async def test_every_face_of_a_group_photo(client: httpx.AsyncClient, data_dir: Path) -> None:
    data = (data_dir / "dlib_faces" / "bald_guys.jpg").read_bytes()
    plain = await detect(client, data, None)
    faces = await detect(client, data, "all")
    assert len(faces) == len(plain) >= 10
    assert [f["box"] for f in faces] == [f["box"] for f in plain]
    for face in faces:
        attributes = face["attributes"]
        assert all(attributes[name] is not None for name in ("age", "gender", "expression", "pose"))
    males = sum(f["attributes"]["gender"]["value"] == "male" for f in faces)
    assert males >= 0.8 * len(faces)  # a photo of bald men


async def test_concurrent_requests_batch_without_mixing_faces(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    photos = [lfw_image(name, number) for name, number, _, _ in KNOWN]
    alone = [await detect(client, photo, "all") for photo in photos]
    together = await asyncio.gather(*(detect(client, photo, "all") for photo in photos))
    for one, other in zip(alone, together, strict=True):
        a, b = one[0]["attributes"], other[0]["attributes"]
        assert b["gender"] == a["gender"]
        assert b["age"]["value"] == pytest.approx(a["age"]["value"], abs=0.1)
        assert b["expression"]["value"] == a["expression"]["value"]


@pytest.mark.parametrize("attributes", ["age,height", "", "smile"])
async def test_unknown_attribute_is_a_validation_problem(
    client: httpx.AsyncClient, data_dir: Path, attributes: str
) -> None:
    response = await client.post(
        "/v1/detect",
        params={"attributes": attributes},
        files=image_file(lfw_image("Colin_Powell", 1)),
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "/problems/validation-error"
    (error,) = body["errors"]
    assert error["loc"] == ["query", "attributes"]
    assert "unknown attribute" in error["msg"]


async def test_models_are_listed_as_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    models = {m["task"]: m for m in response.json()["models"]}
    assert {"age", "gender", "expression"} <= set(models)
    assert models["age"]["runtime"] == models["gender"]["runtime"] == "onnxruntime"
    assert models["expression"]["runtime"] == "tflite"
    assert all(models[task]["ready"] for task in ("age", "gender", "expression"))
