"""The policies are built once and every request's services get those objects; the one that
needs the loaded embedder is there from readiness on, and a request before it is answered as
before (503 models-loading)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from facesvc.app import create_app
from facesvc.container import AppState
from facesvc.db.migrate import upgrade_async
from facesvc.inference.registry import ModelRegistry
from facesvc.services.enrolment import EnrolmentService
from facesvc.services.liveness.service import LivenessService
from facesvc.services.recognition.service import RecognitionPolicy, RecognitionService
from facesvc.settings import Settings
from tests.support.api import ADMIN_KEY, assert_problem, enrolled_user
from tests.support.data import image_file, lfw_image


def spy(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[dict[str, Any]]:
    """The arguments each new ``cls`` is built with, by name, in order."""
    seen: list[dict[str, Any]] = []
    built: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(built)

    def recording(self: object, *args: Any, **kwargs: Any) -> None:
        seen.append(signature.bind(self, *args, **kwargs).arguments)
        built(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", recording)
    return seen


async def test_every_request_gets_the_policies_built_once(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    state: AppState = app.state.facesvc
    policies = state.policies
    assert policies.recognition is not None  # the models are loaded
    recognition = spy(monkeypatch, RecognitionService)
    enrolment = spy(monkeypatch, EnrolmentService)
    liveness = spy(monkeypatch, LivenessService)
    user_id = await enrolled_user(client, "Jiang_Zemin", 1, name="Policies once")
    probe = image_file(lfw_image("Jiang_Zemin", 2))
    for _ in range(2):
        verified = await client.post(f"/v1/users/{user_id}/verify", files=probe)
        assert verified.json()["match"] is True
    assert (await client.post("/v1/liveness/sessions")).status_code == 201
    assert state.policies is policies
    assert [built["policy"] for built in recognition] == [policies.recognition] * 2
    assert all(built["policy"] is policies.recognition for built in recognition)
    assert enrolment
    assert all(built["options"] is policies.enrolment for built in enrolment)
    assert len(liveness) == 3  # each verify's, and the session's
    assert all(built["policy"] is policies.liveness for built in liveness)
    floor = policies.recognition.decisions.threshold
    assert [built["min_similarity"] for built in liveness] == [floor] * 3
    await client.delete(f"/v1/users/{user_id}")


async def test_a_request_before_the_models_are_ready_is_answered_as_before(
    settings: Settings,
    database_backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if database_backend != "sqlite":
        pytest.skip("the policies do not depend on the database")
    release = asyncio.Event()
    start = ModelRegistry.start

    async def held_back(registry: ModelRegistry) -> None:
        await release.wait()
        await start(registry)

    monkeypatch.setattr(ModelRegistry, "start", held_back)
    own = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", "attributes": False}
    )
    await upgrade_async(own.database_url)
    app = create_app(own)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        state: AppState = app.state.facesvc
        from_settings = state.policies
        assert from_settings.recognition is None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://loading", headers={"X-API-Key": ADMIN_KEY}
        ) as c:
            user = (await c.post("/v1/users", json={"name": "Early"})).json()  # needs no model
            probe = image_file(lfw_image("Jiang_Zemin", 2))
            early = await c.post(f"/v1/users/{user['id']}/verify", files=probe)
            assert_problem(early, 503, "models-loading")
            assert_problem(await c.post("/v1/liveness/sessions"), 503, "models-loading")
            assert_problem(await c.post("/v1/identify", files=probe), 503, "models-loading")

            release.set()
            await state.models_ready.wait()
            ready = state.policies
            assert ready.recognition == RecognitionPolicy.from_settings(own, state.registry)
            assert ready.enrolment is from_settings.enrolment
            assert ready.liveness is from_settings.liveness
            enrolled = await c.post(
                f"/v1/users/{user['id']}/faces",
                files=image_file(lfw_image("Jiang_Zemin", 1)),
                data={"consent": "true"},
            )
            assert enrolled.status_code == 201, enrolled.text
            verified = (await c.post(f"/v1/users/{user['id']}/verify", files=probe)).json()
            assert verified["match"] is True
            assert verified["threshold"] == ready.recognition.decisions.verification(None)
            assert state.policies is ready
