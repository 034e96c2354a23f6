"""Readiness, restarts and start-up failures."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facesvc.app import create_app
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, DATA_KEY, assert_problem, client_of_new_app
from tests.support.data import image_file, lfw_image


async def test_readyz_lists_loaded_models(client: httpx.AsyncClient, app: FastAPI) -> None:
    registry = app.state.facesvc.registry  # FACESVC_CPU_RUNTIME may pick OpenVINO variants
    detector, mesh, embedder = registry.detector_spec, registry.mesh_spec, registry.embedder_spec
    assert {detector.name, mesh.name, embedder.name} <= {
        "blazeface",
        "blazeface-openvino",
        "facemesh",
        "facenet-int8",
        "facenet-openvino-int8",
    }
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database"] == "ok"
    names = {m["name"]: m for m in body["models"]}
    # FACESVC_ATTRIBUTES (on by default): the age, gender and expression networks too
    assert set(names) == {detector.name, mesh.name, embedder.name, "age", "gender", "expression"}
    assert all(m["ready"] for m in names.values())
    assert names[embedder.name]["device"] == "/CPU:0"
    assert names[embedder.name]["runtime"] == embedder.resolved_runtime
    assert (await client.get("/livez")).json()["status"] == "ok"


async def test_what_start_up_loaded_is_out_of_the_collectors_sight(app: FastAPI) -> None:
    """Once ready, the models' and libraries' objects are frozen (gc.freeze): a full
    collection under load then scans only what requests made (0.1-0.2 s pauses before)."""
    assert app.state.facesvc.registry.ready
    assert gc.get_freeze_count() > 10_000


async def test_restart_keeps_users_and_faces(client: httpx.AsyncClient, settings: Settings) -> None:
    user = (await client.post("/v1/users", json={"name": "Restart check"})).json()
    enrolled = await client.post(
        f"/v1/users/{user['id']}/faces",
        files=image_file(lfw_image("Jacques_Chirac", 1)),
        data={"consent": "true"},
    )
    assert enrolled.status_code == 201

    # a new process's app on the same database file
    async with client_of_new_app(settings, "restarted") as second:
        body = (await second.get(f"/v1/users/{user['id']}")).json()
        assert body["face_count"] == 1
        faces = (await second.get(f"/v1/users/{user['id']}/faces")).json()["items"]
        assert faces[0]["face_id"] == enrolled.json()["face_id"]
        verified = await second.post(
            f"/v1/users/{user['id']}/verify", files=image_file(lfw_image("Jacques_Chirac", 2))
        )
        assert verified.json()["match"] is True


async def test_missing_model_file_reports_not_ready(settings: Settings, tmp_path: Path) -> None:
    manifest = json.loads((settings.models_dir / "manifest.json").read_text())
    manifest["models"]["facemesh"]["file"] = str(tmp_path / "missing.tflite")
    broken = tmp_path / "manifest.json"
    broken.write_text(json.dumps(manifest))
    async with client_of_new_app(
        settings.model_copy(update={"model_manifest": broken}), "broken"
    ) as c:
        assert (await c.get("/livez")).status_code == 200
        body = assert_problem(await c.get("/readyz"), 503, "not-ready")
        assert "missing.tflite" in str(body["detail"])
        assert_problem(
            await c.post("/v1/detect", files=image_file(lfw_image("Tony_Blair", 1))),
            503,
            "not-ready",
        )
        # routes that need no model still work
        assert (await c.get("/v1/users")).status_code == 200


async def test_unavailable_gpu_is_a_clear_start_up_error(settings: Settings) -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    async with client_of_new_app(settings.model_copy(update={"device": "gpu:0"}), "gpu") as c:
        body = assert_problem(await c.get("/readyz"), 503, "not-ready")
        assert "FACESVC_DEVICE=gpu:0" in str(body["detail"])


def test_device_setting_is_validated() -> None:
    assert Settings(device="GPU").device == "gpu"
    assert Settings(device=" gpu:1 ").device == "gpu:1"
    with pytest.raises(ValueError, match="device"):
        Settings(device="tpu")


def test_workers_spread_over_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from facesvc.inference.devices import DeviceError, pick_device, worker_index

    assert [pick_device("gpu", 2, w) for w in range(5)] == [0, 1, 0, 1, 0]  # worker i: i mod n
    assert [pick_device("gpu:1", 2, w) for w in range(3)] == [1, 1, 1]  # pinned
    with pytest.raises(DeviceError, match="sees 1 GPU"):
        pick_device("gpu:1", 1, 0)
    with pytest.raises(DeviceError, match="sees 0 GPU"):
        pick_device("gpu", 0, 0)
    monkeypatch.setenv("FACESVC_WORKER_INDEX", "3")
    assert worker_index() == 3
    monkeypatch.delenv("FACESVC_WORKER_INDEX")
    assert worker_index() == 0  # the main process of a single-worker server


async def test_a_database_older_than_the_code_is_refused_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Serving a database a migration behind fails every request with a key (a column the
    code reads is missing): start-up refuses it once, naming the command. A database newer
    than the code (a rollback after a release migrated it) is served, with a warning."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from facesvc.db.migrate import SchemaOutOfDateError, head, upgrade_async

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    local = Settings(
        database_url=url,
        encryption_key=DATA_KEY,
        bootstrap_api_key=ADMIN_KEY,
        startup_wait_for_models=False,
    )
    with pytest.raises(SchemaOutOfDateError, match=r"no schema.*facesvc db upgrade"):
        async with LifespanManager(create_app(local), startup_timeout=30, shutdown_timeout=30):
            pass
    await upgrade_async(url, "0008")
    with pytest.raises(SchemaOutOfDateError, match=f"at migration 0008, this code needs {head()}"):
        async with LifespanManager(create_app(local), startup_timeout=30, shutdown_timeout=30):
            pass
    await upgrade_async(url)
    engine = create_async_engine(url)
    async with engine.begin() as conn:  # as a newer release would leave it
        await conn.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
    await engine.dispose()
    async with LifespanManager(create_app(local), startup_timeout=30, shutdown_timeout=30):
        assert "0099_future, which this code does not know" in caplog.text
