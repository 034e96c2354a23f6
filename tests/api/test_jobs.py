"""Async jobs (/v1/jobs): detect and enrol many photos in the background, through the real
app, models and databases; claims between workers; restarts and crashes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select, text, update

from facesvc.app import create_app
from facesvc.container import AppState
from facesvc.db.engine import create_engine, create_sessionmaker, session_scope
from facesvc.db.migrate import upgrade_async
from facesvc.db.models import DEFAULT_TENANT_ID, Job, JobItem, utcnow
from facesvc.repositories.jobs import JobRepository
from facesvc.security.keys import Caller
from facesvc.services.jobs import JobService
from facesvc.settings import Settings
from facesvc.workers.job_runner import JobRunner
from tests.support.api import ADMIN_KEY, DATA_KEY, MakeClient, assert_problem, new_key
from tests.support.data import lfw_image
from tests.support.gates import eventually, gated
from tests.support.pg import SERVER_FIXTURE

FINAL = {"succeeded", "failed", "cancelled"}


def photos(*images: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, data, "image/jpeg")) for name, data in images]


def lfw_photos(name: str, numbers: range) -> list[tuple[str, tuple[str, bytes, str]]]:
    return photos(*((f"{name}_{n}.jpg", lfw_image(name, n)) for n in numbers))


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once its state is final."""
    deadline = time.monotonic() + 180
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] in FINAL:
            return body
        assert time.monotonic() < deadline, f"job still {body['state']}: {body}"
        await asyncio.sleep(0.05)


async def progressed(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once at least one photo is processed (and it has not finished)."""
    deadline = time.monotonic() + 120
    while True:
        body: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if body["done"] > 0:
            assert body["state"] == "running", body
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.01)


def many_photos(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    pool = [lfw_image("Andre_Agassi", n) for n in range(1, 9)]
    return photos(*((f"{i}.jpg", pool[i % len(pool)]) for i in range(count)))


# --- detect ------------------------------------------------------------------------------


async def test_detect_job_reports_every_photo(
    client: httpx.AsyncClient, app: FastAPI, data_dir: Path
) -> None:
    dogs = (data_dir / "dlib_faces" / "dogs.jpg").read_bytes()
    files = [
        *lfw_photos("Andre_Agassi", range(1, 3)),
        *lfw_photos("Tom_Ridge", range(1, 3)),
        ("images", ("dogs.jpg", dogs, "image/jpeg")),
        ("images", ("notes.txt", b"not an image", "text/plain")),
    ]
    created = await client.post("/v1/jobs/detect", files=files)
    assert created.status_code == 202, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["kind"], job["state"], job["total"], job["done"], job["failed"]) == (
        "detect",
        "queued",
        6,
        0,
        0,
    )
    assert job["items"] is None

    body = await finished(client, job["id"])
    assert body["state"] == "succeeded", body
    assert (body["total"], body["done"], body["failed"], body["percent"]) == (6, 6, 1, 100.0)
    assert body["started_at"] is not None
    assert body["finished_at"] >= body["started_at"] >= body["created_at"]
    items = body["items"]
    assert [item["index"] for item in items] == list(range(6))
    assert [item["state"] for item in items] == ["succeeded"] * 5 + ["failed"]
    for item, (_, (_, data, _)) in zip(items[:4], files[:4], strict=True):
        direct = (await client.post("/v1/detect", files={"image": data})).json()
        found = item["detection"]
        assert found["image"] == direct["image"]
        assert len(found["faces"]) == len(direct["faces"]) >= 1
        for a, b in zip(found["faces"], direct["faces"], strict=True):
            assert abs(a["box"]["x"] - b["box"]["x"]) < 1.0
            assert abs(a["score"] - b["score"]) < 0.01
        assert item["face"] is None
        assert item["problem"] is None
    assert items[4]["detection"]["faces"] == []  # no face is not a failure for detection
    assert items[5]["problem"]["type"] == "/problems/unsupported-image-type"
    assert items[5]["problem"]["status"] == 415

    state: AppState = app.state.facesvc
    async with state.sessionmaker() as session:
        stored = (
            await session.execute(
                select(JobItem.image, JobItem.key_id, JobItem.result).where(
                    JobItem.job_id == uuid.UUID(job["id"])
                )
            )
        ).all()
    assert len(stored) == 6
    assert all(image is None and key_id is None for image, key_id, _ in stored)  # erased
    assert {result["v"] for _, _, result in stored} == {1}  # records, not the API's JSON


@pytest.mark.usefixtures("sensitive_attributes")
async def test_detect_jobs_estimate_no_attributes(
    client: httpx.AsyncClient, app: FastAPI, data_dir: Path
) -> None:
    """Jobs take no `attributes` (issue 25): age, gender and expression are never computed in
    the background, whatever is sent and even for a tenant that allows them, so a tenant that
    turns them off after submitting has none computed either. (Should jobs take them one day,
    they need /v1/detect's 403 at submission and a check of the tenant's setting in the
    runner.)"""
    registry = app.state.facesvc.registry
    before = {task: runner.calls for task, runner in registry.attributes.items()}
    created = await client.post(
        "/v1/jobs/detect",
        params={"attributes": "all"},
        data={"attributes": "all"},
        files=lfw_photos("Andre_Agassi", range(1, 3)),
    )
    assert created.status_code == 202, created.text
    body = await finished(client, created.json()["id"])
    assert body["state"] == "succeeded", body
    faces = [face for item in body["items"] for face in item["detection"]["faces"]]
    assert faces
    assert all(face["attributes"] is None for face in faces)
    assert {task: runner.calls for task, runner in registry.attributes.items()} == before


# --- enrol -------------------------------------------------------------------------------


async def test_enrol_job_enrols_each_photo_audited_as_the_key(
    app: FastAPI, as_key: MakeClient, data_dir: Path
) -> None:
    tenant = as_key(await new_key(app, "jobs-enrol", "admin"))  # its own gallery
    user = (await tenant.post("/v1/users", json={"name": "Silvio Berlusconi"})).json()
    dogs = (data_dir / "dlib_faces" / "dogs.jpg").read_bytes()
    files = [
        *lfw_photos("Silvio_Berlusconi", range(1, 4)),
        ("images", ("d.jpg", dogs, "image/jpeg")),
    ]
    created = await tenant.post(
        "/v1/jobs/enrol", files=files, data={"user_id": user["id"], "consent": "true"}
    )
    assert created.status_code == 202, created.text
    assert created.json()["user_id"] == user["id"]

    body = await finished(tenant, created.json()["id"])
    assert body["state"] == "succeeded", body
    assert (body["total"], body["done"], body["failed"]) == (4, 4, 1), body["items"]
    items = body["items"]
    assert [item["state"] for item in items] == ["succeeded"] * 3 + ["failed"]
    assert items[3]["problem"]["type"] == "/problems/no-face"
    face_ids = {item["face"]["face_id"] for item in items[:3]}
    assert {item["face"]["user_id"] for item in items[:3]} == {user["id"]}
    assert (await tenant.get(f"/v1/users/{user['id']}")).json()["face_count"] == 3
    listed = (await tenant.get(f"/v1/users/{user['id']}/faces")).json()["items"]
    assert {f["face_id"] for f in listed} == face_ids
    # the gallery saw the new faces at once
    probe = await tenant.post("/v1/identify", files={"image": lfw_image("Silvio_Berlusconi", 5)})
    assert probe.json()["match"] == user["id"]
    # audited like enrolments through the API, tied to the request that created the job
    audit = (
        await tenant.get("/v1/audit", params={"user_id": user["id"], "action": "face.enrol"})
    ).json()["items"]
    assert len(audit) == 3
    assert {e["actor"] for e in audit} == {"test-admin"}
    assert {e["request_id"] for e in audit} == {created.headers["x-request-id"]}
    # erasing the person erases their jobs too
    assert (await tenant.delete(f"/v1/users/{user['id']}")).status_code == 204
    assert_problem(await tenant.get(f"/v1/jobs/{body['id']}"), 404, "job-not-found")


async def test_enrol_job_checks_consent_user_scope_and_count(
    app: FastAPI, as_key: MakeClient
) -> None:
    tenant = as_key(await new_key(app, "jobs-checks", "admin"))
    verify_only = as_key(await new_key(app, "jobs-checks", "verify"))
    user_id = (await tenant.post("/v1/users", json={"name": "Checks"})).json()["id"]
    one = lfw_photos("Tom_Ridge", range(3, 4))

    async def enrol(client: httpx.AsyncClient, files: Any, **data: str) -> httpx.Response:
        return await client.post("/v1/jobs/enrol", files=files, data=data)

    assert_problem(await enrol(tenant, one, user_id=user_id), 422, "validation-error")
    refused = await enrol(tenant, one, user_id=user_id, consent="false")
    assert_problem(refused, 422, "consent-required")
    assert_problem(
        await enrol(tenant, one, user_id=str(uuid.uuid4()), consent="true"), 404, "user-not-found"
    )
    assert_problem(
        await enrol(tenant, one, user_id="nope", consent="true"), 422, "validation-error"
    )
    assert_problem(await enrol(verify_only, one, user_id=user_id, consent="true"), 403, "forbidden")
    too_many = photos(*((f"{i}.jpg", b"x") for i in range(501)))
    assert_problem(
        await enrol(tenant, too_many, user_id=user_id, consent="true"), 422, "validation-error"
    )
    assert_problem(
        await tenant.post("/v1/jobs/detect", files={"image": lfw_image("Tom_Ridge", 3)}),
        422,
        "validation-error",
    )
    assert (await tenant.get("/v1/jobs")).json()["total"] == 0  # nothing was stored
    assert (await tenant.get(f"/v1/users/{user_id}")).json()["face_count"] == 0


# --- tenants and scopes -------------------------------------------------------------------


async def test_jobs_belong_to_their_tenant_and_scope(
    client: httpx.AsyncClient, app: FastAPI, as_key: MakeClient
) -> None:
    other = as_key(await new_key(app, "jobs-other", "admin"))
    detect = await client.post("/v1/jobs/detect", files=lfw_photos("Tom_Ridge", range(4, 5)))
    assert detect.status_code == 202, detect.text
    job_id = detect.json()["id"]
    assert_problem(await other.get(f"/v1/jobs/{job_id}"), 404, "job-not-found")
    assert_problem(await other.delete(f"/v1/jobs/{job_id}"), 404, "job-not-found")
    assert job_id not in [j["id"] for j in (await other.get("/v1/jobs")).json()["items"]]
    assert job_id in [j["id"] for j in (await client.get("/v1/jobs")).json()["items"]]
    assert_problem(await client.get(f"/v1/jobs/{uuid.uuid4()}"), 404, "job-not-found")
    assert (await finished(client, job_id))["state"] == "succeeded"

    # a verify-only key runs detect jobs, and sees no enrol job of its own tenant
    tenant = as_key(await new_key(app, "jobs-scopes", "admin"))
    verify_only = as_key(await new_key(app, "jobs-scopes", "verify"))
    user_id = (await tenant.post("/v1/users", json={"name": "Scoped"})).json()["id"]
    enrol = await tenant.post(
        "/v1/jobs/enrol",
        files=lfw_photos("Alvaro_Uribe", range(1, 2)),
        data={"user_id": user_id, "consent": "true"},
    )
    assert enrol.status_code == 202, enrol.text
    own = await verify_only.post("/v1/jobs/detect", files=lfw_photos("Tom_Ridge", range(5, 6)))
    assert own.status_code == 202, own.text
    assert (await finished(verify_only, own.json()["id"]))["state"] == "succeeded"
    assert_problem(await verify_only.get(f"/v1/jobs/{enrol.json()['id']}"), 404, "job-not-found")
    seen = (await verify_only.get("/v1/jobs")).json()
    assert [j["id"] for j in seen["items"]] == [own.json()["id"]]
    assert seen["total"] == 1
    assert (await finished(tenant, enrol.json()["id"]))["state"] == "succeeded"


# --- cancel and list ------------------------------------------------------------------------


async def test_cancel_stops_the_remaining_photos(client: httpx.AsyncClient, app: FastAPI) -> None:
    created = await client.post("/v1/jobs/detect", files=many_photos(200))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    await progressed(client, job_id)
    cancelled = await client.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["state"] == "cancelled"
    assert body["finished_at"] is not None
    assert 0 < body["done"] < 200
    states = [item["state"] for item in body["items"]]
    assert states.count("cancelled") == 200 - body["done"]
    assert set(states[: body["done"]]) == {"succeeded"}  # processed in order
    # A batch in flight when it was cancelled is not counted: wait until the runner has
    # let go of the job (however long that batch takes), then read it again.
    runner = app.state.facesvc.job_runner
    await eventually(lambda: runner._running_job != uuid.UUID(job_id), "the runner let go")
    later = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (later["state"], later["done"]) == ("cancelled", body["done"])
    assert [item["state"] for item in later["items"]] == states
    again = await client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 200
    assert again.json()["done"] == body["done"]

    state: AppState = app.state.facesvc
    async with state.sessionmaker() as session:
        left = await session.scalar(
            select(JobItem.id)
            .where(JobItem.job_id == uuid.UUID(job_id), JobItem.image.is_not(None))
            .limit(1)
        )
    assert left is None  # no photo is kept

    done = await client.post("/v1/jobs/detect", files=lfw_photos("Tom_Ridge", range(6, 7)))
    assert (await finished(client, done.json()["id"]))["state"] == "succeeded"
    assert_problem(await client.delete(f"/v1/jobs/{done.json()['id']}"), 409, "job-finished")


async def test_listing_is_paginated_newest_first(app: FastAPI, as_key: MakeClient) -> None:
    tenant = as_key(await new_key(app, "jobs-list", "admin"))
    ids = []
    for n in range(1, 4):
        created = await tenant.post(
            "/v1/jobs/detect", files=lfw_photos("Gray_Davis", range(n, n + 1))
        )
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    first = (await tenant.get("/v1/jobs", params={"limit": 2})).json()
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    assert [j["id"] for j in first["items"]] == [ids[2], ids[1]]
    assert all(j["items"] is None for j in first["items"])
    rest = (await tenant.get("/v1/jobs", params={"limit": 2, "offset": 2})).json()
    assert [j["id"] for j in rest["items"]] == [ids[0]]
    assert_problem(await tenant.get("/v1/jobs", params={"limit": 101}), 422, "validation-error")
    for job_id in ids:
        assert (await finished(tenant, job_id))["state"] == "succeeded"


# --- claims, restarts, crashes ---------------------------------------------------------------


@pytest.fixture
async def fresh_url(database_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the session's backend: no runner of the session app sees it."""
    if database_backend != "sqlite":
        server = request.getfixturevalue(SERVER_FIXTURE[database_backend])
        url: str = server.url_for(server.create_database())
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await upgrade_async(url)
    return url


async def test_workers_never_claim_the_same_job(app: FastAPI, fresh_url: str) -> None:
    state: AppState = app.state.facesvc
    engine = create_engine(fresh_url)
    sessions = create_sessionmaker(engine)
    try:
        caller = Caller.operator(DEFAULT_TENANT_ID)
        async with session_scope(sessions) as session:
            service = JobService(session, state.cipher, caller)
            created = {(await service.create_detect([b"photo"])).id for _ in range(6)}

        def runner() -> JobRunner:
            return JobRunner(sessions, state.analysis, state.gallery, state.cipher)

        runners = [runner() for _ in range(3)]
        claims = await asyncio.gather(*(r.claim_next() for r in runners for _ in range(3)))
        claimed_ids = [c.id for c in claims if c is not None]
        assert claimed_ids
        assert len(claimed_ids) == len(set(claimed_ids))  # never twice
        while (more := await runners[0].claim_next()) is not None:
            claimed_ids.append(more.id)
        assert sorted(claimed_ids) == sorted(created)  # and every job once

        # a running job whose lease ran out goes back to the queue; a live one does not
        stale_id, live_id = claimed_ids[0], claimed_ids[1]
        async with session_scope(sessions) as session:
            owner_id = (await session.get(Job, stale_id)).runner_id  # type: ignore[union-attr]
            await session.execute(
                update(Job)
                .where(Job.id == stale_id)
                .values(heartbeat_at=utcnow() - timedelta(hours=1))
            )
        assert await runners[1].requeue_stale() == 1
        async with sessions() as session:
            jobs = {j.id: j for j in (await session.scalars(select(Job))).all()}
        assert (jobs[stale_id].state, jobs[stale_id].runner_id) == ("queued", None)
        assert jobs[live_id].state == "running"
        # another runner takes it; the old owner can no longer renew it (nor store results)
        thief = next(r for r in runners if r.runner_id != owner_id)
        taken = await thief.claim_next()
        assert taken is not None
        assert taken.id == stale_id
        async with session_scope(sessions) as session:
            repository = JobRepository(session)
            assert await repository.renew(stale_id, thief.runner_id, utcnow())
            assert owner_id is not None
            assert not await repository.renew(stale_id, owner_id, utcnow())
    finally:
        await engine.dispose()


async def count_processed(url: str, job_id: uuid.UUID) -> tuple[Job, list[JobItem]]:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            job = await session.get(Job, job_id)
            items = list(
                (
                    await session.scalars(
                        select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.position)
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert job is not None
    return job, items


async def test_jobs_survive_shutdown_restart_and_crash(
    settings: Settings, fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = [lfw_image("Nestor_Kirchner", n) for n in range(1, 4)]
    sentinel = {"image": {"width": 1, "height": 1}, "faces": []}

    first = create_app(settings.model_copy(update={"database_url": fresh_url}))
    async with LifespanManager(first, startup_timeout=60, shutdown_timeout=60):
        state: AppState = first.state.facesvc
        await state.models_ready.wait()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first),
            base_url="http://first",
            headers={"X-API-Key": ADMIN_KEY},
        ) as c:
            # a clean shutdown mid-job: what was processed stays, the job goes back to the queue
            # the detector is held once the job has progressed, so however fast the machine
            # the job is mid-way when the runner stops
            with gated(state.registry.detector, monkeypatch, open_at_first=True) as gate:
                big = (await c.post("/v1/jobs/detect", files=many_photos(120))).json()
                await progressed(c, big["id"])
                gate.gate.clear()
                assert state.job_runner is not None
                await state.job_runner.stop()
            job, items = await count_processed(fresh_url, uuid.UUID(big["id"]))
            assert (job.state, job.runner_id) == ("queued", None)
            processed = [i for i in items if i.state != "pending"]
            assert 0 < job.done == len(processed) < 120
            assert all(i.image is None and i.result for i in processed)
            assert all(i.image for i in items if i.state == "pending")

            # with no runner, jobs wait; their photos are stored encrypted
            queued = (
                await c.post(
                    "/v1/jobs/detect", files=photos(*((str(n), d) for n, d in enumerate(raw)))
                )
            ).json()
            crashed = (
                await c.post(
                    "/v1/jobs/detect", files=photos(*((str(n), d) for n, d in enumerate(raw)))
                )
            ).json()
            dropped = (await c.post("/v1/jobs/detect", files=photos(("0", raw[0])))).json()
            assert (await c.delete(f"/v1/jobs/{dropped['id']}")).json()["state"] == "cancelled"
            await asyncio.sleep(0.5)
            assert (await c.get(f"/v1/jobs/{queued['id']}")).json()["state"] == "queued"
            _, stored = await count_processed(fresh_url, uuid.UUID(queued["id"]))
            for item, data in zip(stored, raw, strict=True):
                assert item.image is not None
                assert item.key_id == DATA_KEY.split(":")[0]
                assert data[100:200] not in item.image
                assert state.cipher.decrypt(item.image, item.key_id, item.id) == data

    # a worker died while running `crashed`, after its first photo
    engine = create_engine(fresh_url)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            crashed_id = uuid.UUID(crashed["id"])
            await session.execute(
                update(Job)
                .where(Job.id == crashed_id)
                .values(
                    state="running",
                    runner_id="dead-worker",
                    heartbeat_at=utcnow() - timedelta(minutes=10),
                    started_at=utcnow() - timedelta(minutes=11),
                    done=1,
                )
            )
            await session.execute(
                update(JobItem)
                .where(JobItem.job_id == crashed_id, JobItem.position == 0)
                .values(state="succeeded", result=sentinel, image=None, key_id=None)
            )
        async with engine.connect() as conn:
            before = (await conn.execute(text("SELECT count(*) FROM job_items"))).scalar_one()
    finally:
        await engine.dispose()

    second = create_app(settings.model_copy(update={"database_url": fresh_url}))
    async with (
        LifespanManager(second, startup_timeout=60, shutdown_timeout=60),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second),
            base_url="http://second",
            headers={"X-API-Key": ADMIN_KEY},
        ) as c,
    ):
        done_before = {i.position: i.finished_at for i in processed}
        resumed = await finished(c, big["id"])
        assert (resumed["state"], resumed["done"], resumed["failed"]) == ("succeeded", 120, 0)
        _, after = await count_processed(fresh_url, uuid.UUID(big["id"]))
        assert {i.position: i.finished_at for i in after if i.position in done_before} == (
            done_before  # not redone
        )
        body = await finished(c, queued["id"])
        assert (body["state"], body["done"], body["failed"]) == ("succeeded", 3, 0)
        assert all(len(i["detection"]["faces"]) >= 1 for i in body["items"])
        recovered = await finished(c, crashed["id"])
        assert (recovered["state"], recovered["done"]) == ("succeeded", 3)
        assert recovered["items"][0]["detection"] == sentinel  # kept, not redone
        assert all(len(i["detection"]["faces"]) >= 1 for i in recovered["items"][1:])
        assert (await c.get(f"/v1/jobs/{dropped['id']}")).json()["done"] == 0
    assert before == 120 + 3 + 3 + 1


async def test_revoking_the_key_stops_its_jobs(
    client: httpx.AsyncClient, app: FastAPI, as_key: MakeClient
) -> None:
    """A revoked (say, leaked) key's queued work does not go on in its name."""
    created_key = await client.post("/v1/keys", json={"name": "batch", "scopes": ["verify"]})
    batch = as_key(created_key.json()["key"])
    created = await batch.post("/v1/jobs/detect", files=many_photos(200))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    await progressed(batch, job_id)
    assert (await client.delete(f"/v1/keys/{created_key.json()['id']}")).status_code == 200
    body = await finished(client, job_id)  # the admin of the same tenant still sees it
    assert body["state"] == "cancelled", body
    assert body["done"] < 200
    assert "revoked" in (body.get("error") or "")
    assert_problem(await batch.get(f"/v1/jobs/{job_id}"), 401, "unauthorized")
