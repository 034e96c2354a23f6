"""The registry loads frozen graphs in the seed tutorial's form by configuration alone.

The test builds and freezes two small but real graphs: an SSD-style detector
(``image_tensor:0`` -> ``detection_boxes:0``, ``detection_scores:0``, ``num_detections:0``)
and a FaceNet-style embedder (``input:0``, ``phase_train:0`` -> ``embeddings:0``), writes a
manifest naming them, and runs them through the same registry, pipeline and HTTP API.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager

from facesvc.app import create_app
from facesvc.container import AppState
from facesvc.db.migrate import upgrade_async
from facesvc.inference.embedders.facenet import prewhiten
from facesvc.inference.pipeline import FacePipeline, PipelineLimits
from facesvc.inference.registry import ModelRegistry
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, DATA_KEY

REAL_MODELS = Path(Settings().models_dir)


def _freeze(fn: Any, path: Path) -> None:
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())


def build_ssd(path: Path) -> None:
    """Finds the bright square: box = bounding box of pixels above 128, score = its fill."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="image_tensor")])
    def detect(image: Any) -> Any:
        grey = tf.reduce_mean(tf.cast(image[0], tf.float32), axis=-1)
        mask = grey > 128.0
        h = tf.cast(tf.shape(grey)[0], tf.float32)
        w = tf.cast(tf.shape(grey)[1], tf.float32)
        rows = tf.cast(tf.where(tf.reduce_any(mask, axis=1))[:, 0], tf.float32)
        cols = tf.cast(tf.where(tf.reduce_any(mask, axis=0))[:, 0], tf.float32)
        box = tf.stack(
            [
                tf.reduce_min(rows) / h,
                tf.reduce_min(cols) / w,
                (tf.reduce_max(rows) + 1) / h,
                (tf.reduce_max(cols) + 1) / w,
            ]
        )
        score = tf.reduce_mean(tf.cast(mask, tf.float32)) * 4.0
        boxes = tf.identity(tf.reshape(box, [1, 1, 4]), name="detection_boxes")
        scores = tf.identity(tf.reshape(tf.minimum(score, 1.0), [1, 1]), name="detection_scores")
        count = tf.identity(tf.constant([1.0]), name="num_detections")
        return boxes, scores, count

    _freeze(detect, path)


def build_facenet(path: Path) -> np.ndarray:
    """Global average pool + a fixed dense layer to 128-d, L2-normalised; returns the weights."""
    import tensorflow as tf

    weights = np.random.default_rng(7).normal(size=(3 * 16, 128)).astype(np.float32)
    kernel = tf.Variable(weights)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 160, 160, 3], tf.float32, name="input"),
            tf.TensorSpec([], tf.bool, name="phase_train"),
        ]
    )
    def embed(images: Any, phase_train: Any) -> Any:
        pooled = tf.nn.avg_pool2d(images, ksize=40, strides=40, padding="VALID")  # 4x4x3
        flat = tf.reshape(pooled, [-1, 48])
        return tf.math.l2_normalize(tf.matmul(flat, kernel), axis=1, name="embeddings")

    _freeze(embed, path)
    return weights


def reference_embedding(crop: np.ndarray, weights: np.ndarray) -> np.ndarray:
    x = prewhiten(crop[None])[0]
    pooled = x.reshape(4, 40, 4, 40, 3).mean(axis=(1, 3)).reshape(48)
    v = pooled @ weights
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def seed_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, np.ndarray]:
    folder = tmp_path_factory.mktemp("seed-models")
    build_ssd(folder / "face_detection_model.pb")
    weights = build_facenet(folder / "face_recognition_model.pb")
    real = json.loads((REAL_MODELS / "manifest.json").read_text())
    manifest = {
        "models": {
            "seed-ssd": {
                "task": "detector",
                "architecture": "ssd",
                "version": "seed-1",
                "file": "face_detection_model.pb",
                "sha256": hashlib.sha256(
                    (folder / "face_detection_model.pb").read_bytes()
                ).hexdigest(),
                "tensors": {
                    "image": "image_tensor:0",
                    "boxes": "detection_boxes:0",
                    "scores": "detection_scores:0",
                    "count": "num_detections:0",
                },
                "crop": {"square": False, "scale": 1.0},
            },
            "seed-facenet": {
                "task": "embedder",
                "architecture": "facenet",
                "version": "seed-1",
                "file": "face_recognition_model.pb",
                "tensors": {
                    "input": "input:0",
                    "phase_train": "phase_train:0",
                    "embeddings": "embeddings:0",
                },
                "options": {"input_size": 160, "preprocessing": "prewhiten"},
                "threshold": 0.9,
            },
            # the mesh stays the real MediaPipe model (the SSD gives no landmarks)
            "facemesh": {
                **real["models"]["facemesh"],
                "file": str(REAL_MODELS / real["models"]["facemesh"]["file"]),
            },
        }
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    db = folder / "seed.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        models_dir=folder,
        detector="seed-ssd",
        embedder="seed-facenet",
        mesh="facemesh",
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
    )
    return settings, weights


def bright_square_image() -> np.ndarray:
    image = np.full((240, 320, 3), 30, np.uint8)
    image[60:180, 100:220] = 220
    cv2.circle(image, (140, 100), 8, (0, 0, 0), -1)
    return image


async def test_registry_runs_seed_graphs_by_configuration(
    seed_setup: tuple[Settings, np.ndarray],
) -> None:
    settings, weights = seed_setup
    registry = ModelRegistry(settings)
    await registry.start()
    try:
        assert registry.embedding_dim == 128
        pipeline = FacePipeline(registry, PipelineLimits.from_settings(settings))
        image = bright_square_image()
        detections = await pipeline.detect(image)
        assert len(detections) == 1
        box = detections[0].box
        assert (box.x, box.y, box.width, box.height) == pytest.approx((100, 60, 120, 120), abs=0.01)
        faces = await pipeline.landmarks(image, detections)
        assert faces[0].five_points.shape == (5, 2)  # from the mesh, since SSD has none
        (face,) = await pipeline.embed(image, faces)
        crop = cv2.resize(image[60:180, 100:220], (160, 160), interpolation=cv2.INTER_LINEAR)
        expected = reference_embedding(crop, weights)
        assert face.embedding is not None
        assert float(face.embedding @ expected) > 0.999
    finally:
        registry.close()


async def test_seed_graphs_serve_the_http_api(seed_setup: tuple[Settings, np.ndarray]) -> None:
    settings, _ = seed_setup
    await upgrade_async(settings.database_url)
    app = create_app(settings)
    ok, png = cv2.imencode(".png", cv2.cvtColor(bright_square_image(), cv2.COLOR_RGB2BGR))
    assert ok
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        state: AppState = app.state.facesvc
        await state.models_ready.wait()
        assert state.registry.ready, state.models_error
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://seed", headers={"X-API-Key": ADMIN_KEY}
        ) as client:
            files = {"image": ("square.png", png.tobytes(), "image/png")}
            detected = (await client.post("/v1/detect", files=files)).json()
            assert detected["faces"][0]["box"] == {
                "x": 100.0,
                "y": 60.0,
                "width": 120.0,
                "height": 120.0,
            }
            user = (await client.post("/v1/users", json={"name": "square"})).json()
            enrolled = await client.post(
                f"/v1/users/{user['id']}/faces", files=files, data={"consent": "true"}
            )
            assert enrolled.status_code == 201, enrolled.text
            assert enrolled.json()["model"] == {"name": "seed-facenet", "version": "seed-1"}
            verified = (await client.post(f"/v1/users/{user['id']}/verify", files=files)).json()
            assert verified["match"] is True
            assert verified["threshold"] == 0.9
            assert verified["similarity"] == pytest.approx(1.0, abs=1e-5)
