"""Bring your own embedder as ONNX, the steps an operator follows (README): a manifest entry
with the file, its sha256 and the input contract; `facesvc eval calibrate` on LFW; `facesvc
reembed` to move the faces FaceNet stored; then the service enrols, verifies and identifies
with it. The model is a small ONNX graph built here with ArcFace's shapes (aligned 112x112
five-point crops in, 512-d out): the strong ones are licensed, in no package registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from facesvc.container import AppState
from facesvc.inference.calibration import ScoreCalibration
from facesvc.inference.embedders.onnx import aligned_crop
from facesvc.inference.manifest import sha256_file
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, DATA_KEY, running_app
from tests.support.data import LFW, image_file, lfw_image, require_data
from tests.support.manifests import manifest_with
from tests.support.onnx_graphs import build_embedder
from tests.support.server_process import facesvc_command

pytestmark = pytest.mark.e2e

ENROLLED = ("Hans_Blix", "Gray_Davis")  # enrolled with FaceNet (photos 1, 2), then re-embedded


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*facesvc_command(), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done


def small_lfw(root: Path) -> None:
    """An LFW of 15 people with 4 photos and 20 with one (links into the shared copy): enough
    pairs (~3,000 impostor) to resolve FAR 1e-3 in a test."""
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    many = [p for p in people if len(list(p.iterdir())) >= 4][:15]
    single = [p for p in people if len(list(p.iterdir())) == 1][:20]
    for person in many + single:
        (root / person.name).mkdir(parents=True)
        count = 4 if person in many else 1
        for number in range(1, count + 1):
            name = f"{person.name}_{number:04d}.jpg"
            (root / person.name / name).symlink_to(person / name)


async def test_an_onnx_embedder_calibrated_reembedded_and_serving(tmp_path: Path) -> None:
    require_data()
    model = tmp_path / "toy_arcface.onnx"
    build_embedder(model)
    calibration_file = tmp_path / "calibration" / "toy-arcface.json"
    real = Settings()
    manifest = manifest_with(
        tmp_path,
        **{
            "toy-arcface": {
                "task": "embedder",
                "architecture": "arcface",
                "version": "toy-1",
                "file": str(model),
                "sha256": sha256_file(model),
                "space": "toy-arcface",
                "calibration_file": str(calibration_file),
                "options": {
                    "input_size": 112,
                    "alignment": "arcface-5pt",
                    "channel_order": "rgb",
                    "layout": "nchw",
                    "mean": [127.5, 127.5, 127.5],
                    "std": [127.5, 127.5, 127.5],
                    "output_dim": 512,
                },
            }
        },
    )
    small_lfw(tmp_path / "data" / "lfw" / "lfw-deepfunneled")
    people = tmp_path / "people"
    for name in ENROLLED:
        (people / name).mkdir(parents=True)
        for number in (1, 2):
            (people / name / f"{name}_{number:04d}.jpg").symlink_to(
                LFW / name / f"{name}_{number:04d}.jpg"
            )
    database = f"sqlite+aiosqlite:///{tmp_path / 'faces.db'}"
    env = {
        **os.environ,
        "FACESVC_DATABASE_URL": database,
        "FACESVC_ENCRYPTION_KEY": DATA_KEY,
        "FACESVC_MODEL_MANIFEST": str(manifest),
        "FACESVC_MODELS_DIR": str(real.models_dir),
        "FACESVC_DATA_DIR": str(tmp_path / "data"),
        "FACESVC_STORE_FACE_CROPS": "true",  # what reembed recomputes from
    }
    run(["db", "upgrade"], env)
    enrolled = run(["enrol", str(people), "--consent"], env)  # the default FaceNet
    assert "4 faces enrolled" in enrolled.stdout, enrolled.stdout

    # 1. calibrate the new embedding space on (a small) LFW
    summary = tmp_path / "calibration-summary.json"
    run(
        ["eval", "calibrate", "--embedder", "toy-arcface", "--summary", str(summary), "--no-cache"],
        env,
    )
    calibration = ScoreCalibration.load(calibration_file)
    assert calibration.space == "toy-arcface"
    assert calibration.n_genuine == 15 * 6  # 4 photos: 6 pairs per person
    assert calibration.n_impostor == (15 * 4 + 20) * (15 * 4 + 20 - 1) // 2 - 15 * 6
    report = json.loads(summary.read_text(encoding="utf-8"))
    at_1e3 = next(row for row in report["at_far"] if row["far"] == 1e-3)
    assert at_1e3["resolved"] is True

    # 2. move FaceNet's faces into it from their kept crops
    toy_env = {**env, "FACESVC_EMBEDDER": "toy-arcface"}
    moved = run(["reembed"], toy_env)
    assert re.search(r"facenet: 4;.*re-embedded 4 with 'toy-arcface'", moved.stdout), moved.stdout

    # 3. serve with it
    settings = Settings(
        database_url=database,
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
        model_manifest=manifest,
        models_dir=real.models_dir,
        embedder="toy-arcface",
    )
    async with running_app(settings, startup_timeout=60) as app:
        state: AppState = app.state.facesvc
        assert state.registry.embedding_dim == 512
        # no threshold in the entry: the floor is the calibration's at FAR 1e-2
        assert state.registry.threshold == round(calibration.threshold_for_far(1e-2), 4)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://onnx.test", headers={"X-API-Key": ADMIN_KEY}
        ) as c:
            embedded = await c.post("/v1/embed", files=image_file(lfw_image("Hans_Blix", 3)))
            vector = embedded.json()["faces"][0]["embedding"]
            assert len(vector) == 512
            assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
            # what the model saw: the face warped onto ArcFace's template by its five points
            pipeline = state.pipeline
            image = await pipeline.decode(lfw_image("Hans_Blix", 3))
            (face,) = await pipeline.landmarks(image, (await pipeline.detect(image))[:1])
            crop = aligned_crop(image, face.points, 112)
            by_hand = state.registry.embedder.model.predict(crop[None])[0]
            assert float(by_hand @ np.asarray(vector)) > 0.9999

            users = {u["name"]: u["id"] for u in (await c.get("/v1/users")).json()["items"]}
            blix, davis = users["Hans Blix"], users["Gray Davis"]
            # re-embedded faces: the enrolled photo finds its person (its crop, re-aligned)
            probe = image_file(lfw_image("Hans_Blix", 1))
            verified = (await c.post(f"/v1/users/{blix}/verify", files=probe)).json()
            expected = max(state.registry.threshold, calibration.threshold_for_far(1e-3))
            assert verified["threshold"] == pytest.approx(expected)
            assert verified["false_match_rate"] <= 1.001e-3
            assert verified["match"] is True, verified
            assert verified["similarity"] > 0.99
            wrong = (await c.post(f"/v1/users/{davis}/verify", files=probe)).json()
            assert wrong["match"] is False
            found = (await c.post("/v1/identify", files=probe)).json()
            assert found["match"] == blix
            assert found["gallery_faces"] == 4

            # a new enrolment with the ONNX model
            new = (await c.post("/v1/users", json={"name": "Jean Chretien"})).json()
            photo = image_file(lfw_image("Jean_Chretien", 1))
            added = await c.post(
                f"/v1/users/{new['id']}/faces", files=photo, data={"consent": "true"}
            )
            assert added.status_code == 201, added.text
            again = (await c.post(f"/v1/users/{new['id']}/verify", files=photo)).json()
            assert again["match"] is True
            assert again["similarity"] == pytest.approx(1.0, abs=1e-4)
            assert (await c.post("/v1/identify", files=photo)).json()["match"] == new["id"]

        async with state.engine.connect() as conn:
            stored = (
                await conn.execute(text("SELECT DISTINCT model_name, embedding_dim FROM faces"))
            ).all()
        assert sorted(tuple(row) for row in stored) == [("toy-arcface", 512)]
