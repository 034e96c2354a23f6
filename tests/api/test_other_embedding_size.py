"""An embedder of another size than FaceNet's 128: a small frozen graph built here (64-d),
registered in a manifest of its own, enrols, verifies and identifies; the gallery, the
repository codec and the answers take its size from the loaded model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from facesvc.container import AppState
from facesvc.inference.manifest import sha256_file
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, DATA_KEY, assert_problem, running_app
from tests.support.data import image_file, lfw_image
from tests.support.manifests import manifest_with
from tests.support.onnx_graphs import build_embedder

DIM = 64


def build_frozen_graph(path: Path) -> None:
    """input:0 (N, 160, 160, 3) float32 -> embeddings:0 (N, 64): 4x4 average pooling and a
    fixed random projection, frozen to constants like the seed's FaceNet graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    projection = tf.constant(
        np.random.default_rng(7).standard_normal((40 * 40 * 3, DIM)).astype(np.float32)
    )

    @tf.function(input_signature=[tf.TensorSpec([None, 160, 160, 3], tf.float32, name="input")])
    def embed(x: tf.Tensor) -> tf.Tensor:
        pooled = tf.nn.avg_pool2d(x, 4, 4, "VALID")
        return tf.identity(
            tf.matmul(tf.reshape(pooled, [-1, 40 * 40 * 3]), projection), "embeddings"
        )

    frozen = convert_variables_to_constants_v2(embed.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())


@pytest.fixture(scope="module")
async def small_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    folder = tmp_path_factory.mktemp("small-embedder")
    graph = folder / "small_64.pb"
    build_frozen_graph(graph)
    real = Settings()
    entry = {
        "task": "embedder",
        "architecture": "facenet",
        "version": "test-64-1",
        "file": str(graph),
        "tensors": {"input": "input:0", "phase_train": "", "embeddings": "embeddings:0"},
        "options": {"input_size": 160, "preprocessing": "prewhiten"},
        "threshold": 0.9,
        "space": "small-64",
    }
    manifest = manifest_with(folder, **{"small-64": entry})
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{folder / 'facesvc.db'}",
        models_dir=real.models_dir,
        model_manifest=manifest,
        embedder="small-64",
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
        enrol_quality_gate=False,
    )
    async with running_app(settings, startup_timeout=60) as app:
        yield app


async def test_a_64_d_embedder_enrols_verifies_and_identifies(small_app: FastAPI) -> None:
    state: AppState = small_app.state.facesvc
    assert state.registry.embedding_dim == DIM
    transport = httpx.ASGITransport(app=small_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://small.test", headers={"X-API-Key": ADMIN_KEY}
    ) as c:
        embedded = await c.post("/v1/embed", files=image_file(lfw_image("Hans_Blix", 1)))
        assert embedded.status_code == 200, embedded.text
        vector = embedded.json()["faces"][0]["embedding"]
        assert len(vector) == DIM
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)

        user = (await c.post("/v1/users", json={"name": "Hans Blix"})).json()
        photo = image_file(lfw_image("Hans_Blix", 1))
        enrolled = await c.post(
            f"/v1/users/{user['id']}/faces", files=photo, data={"consent": "true"}
        )
        assert enrolled.status_code == 201, enrolled.text

        verified = await c.post(f"/v1/users/{user['id']}/verify", files=photo)
        assert verified.status_code == 200, verified.text
        assert verified.json()["match"] is True
        assert verified.json()["similarity"] == pytest.approx(1.0, abs=1e-3)

        identified = await c.post("/v1/identify", files=photo)
        assert identified.status_code == 200, identified.text
        assert identified.json()["match"] == user["id"]

    async with state.engine.connect() as conn:
        sizes = (await conn.execute(text("SELECT DISTINCT embedding_dim FROM faces"))).all()
    assert [row[0] for row in sizes] == [DIM]
    assert state.gallery.index.dim == DIM


async def test_an_embedder_without_threshold_or_calibration_answers_503_for_decisions(
    tmp_path: Path,
) -> None:
    """Nothing can be decided with an embedder that has neither a threshold nor a calibration:
    verify and identify answer 503 not-ready naming the command that calibrates it (not a
    500), while detection and embeddings work."""
    model = tmp_path / "e.onnx"
    build_embedder(model, dim=32)
    entry = {
        "task": "embedder",
        "architecture": "arcface",
        "version": "1",
        "file": str(model),
        "sha256": sha256_file(model),
    }
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'facesvc.db'}",
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
        model_manifest=manifest_with(tmp_path, uncalibrated=entry),
        embedder="uncalibrated",
        enrol_quality_gate=False,
    )
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://raw.test", headers={"X-API-Key": ADMIN_KEY}
        ) as c:
            photo = image_file(lfw_image("Hans_Blix", 1))
            user = (await c.post("/v1/users", json={"name": "Hans Blix"})).json()
            for response in (
                await c.post(f"/v1/users/{user['id']}/verify", files=photo),
                await c.post("/v1/identify", files=photo),
            ):
                body = assert_problem(response, 503, "not-ready")
                assert "facesvc eval calibrate --embedder uncalibrated" in str(body["detail"])
            assert (await c.post("/v1/embed", files=photo)).status_code == 200
            assert (await c.post("/v1/detect", files=photo)).status_code == 200
