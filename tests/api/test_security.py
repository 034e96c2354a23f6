"""Keys, scopes, tenants, lockout, consent, audit and erasure, through the real app."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Uuid, bindparam, text, update

from facesvc.container import AppState
from facesvc.db.engine import session_scope
from facesvc.db.models import LoginAttempts, utcnow
from tests.support.api import ADMIN_KEY, MakeClient, assert_problem, enrolled_user, new_key
from tests.support.data import image_file, lfw_image
from tests.support.gates import eventually, gated, waiting_items

# --- keys and scopes ---------------------------------------------------------------------


async def test_missing_or_invalid_key_is_401(anonymous: httpx.AsyncClient) -> None:
    body = assert_problem(await anonymous.get("/v1/users"), 401, "unauthorized")
    assert body["detail"] == "an API key is required"
    response = await anonymous.get("/v1/users", headers={"X-API-Key": "fsk_not-a-real-key"})
    assert_problem(response, 401, "unauthorized")
    assert "Bearer" in response.headers["www-authenticate"]
    detect = await anonymous.post("/v1/detect", files=image_file(lfw_image("Colin_Powell", 1)))
    assert_problem(detect, 401, "unauthorized")  # before the upload is looked at


async def test_probes_and_docs_stay_open(anonymous: httpx.AsyncClient) -> None:
    for path in ("/livez", "/readyz", "/docs", "/openapi.json", "/problems/no-face"):
        assert (await anonymous.get(path)).status_code == 200, path


async def test_bearer_works_like_x_api_key(anonymous: httpx.AsyncClient) -> None:
    ok = await anonymous.get("/v1/users", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200, ok.text
    bad = await anonymous.get("/v1/users", headers={"Authorization": "Bearer nope-nope-nope"})
    assert_problem(bad, 401, "unauthorized")


async def test_scopes_are_enforced(app: FastAPI, as_key: MakeClient) -> None:
    verify_only = as_key(await new_key(app, "default", "verify"))
    enrol_only = as_key(await new_key(app, "default", "enrol"))
    photo = image_file(lfw_image("Colin_Powell", 1))
    assert_problem(await verify_only.get("/v1/users"), 403, "forbidden")
    assert_problem(await verify_only.post("/v1/users", json={"name": "x"}), 403, "forbidden")
    assert_problem(await verify_only.get("/v1/keys"), 403, "forbidden")
    assert (await verify_only.post("/v1/identify", files=photo)).status_code == 200
    assert (await verify_only.post("/v1/detect", files=photo)).status_code == 200  # any key
    assert (await enrol_only.get("/v1/users")).status_code == 200
    assert_problem(await enrol_only.post("/v1/identify", files=photo), 403, "forbidden")
    assert_problem(await enrol_only.get("/v1/audit"), 403, "forbidden")


async def test_keys_are_shown_once_hashed_and_revocable(
    client: httpx.AsyncClient, app: FastAPI, as_key: MakeClient
) -> None:
    created = await client.post("/v1/keys", json={"name": "kiosk", "scopes": ["verify"]})
    assert created.status_code == 201, created.text
    body = created.json()
    secret, key_id = body["key"], body["id"]
    assert secret.startswith("fsk_")
    assert len(secret) >= 40
    assert body["prefix"] == secret[:12]
    listed = (await client.get("/v1/keys")).json()["items"]
    assert key_id in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)
    # only the SHA-256 is stored, nowhere the secret itself
    state: AppState = app.state.facesvc
    async with state.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM api_keys"))).all()
    assert all(secret not in [str(v) for v in row] for row in rows)

    kiosk = as_key(secret)
    assert (
        await kiosk.post("/v1/identify", files=image_file(lfw_image("Colin_Powell", 1)))
    ).status_code == 200
    revoked = await client.delete(f"/v1/keys/{key_id}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = await kiosk.post("/v1/identify", files=image_file(lfw_image("Colin_Powell", 1)))
    assert_problem(after, 401, "unauthorized")
    assert_problem(await client.delete(f"/v1/keys/{uuid.uuid4()}"), 404, "key-not-found")
    invalid = await client.post("/v1/keys", json={"name": "x", "scopes": ["root"]})
    assert_problem(invalid, 422, "validation-error")


# --- tenants -----------------------------------------------------------------------------


async def test_tenants_never_see_each_other(
    client: httpx.AsyncClient, app: FastAPI, as_key: MakeClient
) -> None:
    other = as_key(await new_key(app, "tenant-b", "admin"))
    mine = await enrolled_user(client, "Gloria_Macapagal_Arroyo", 1)
    theirs = await enrolled_user(other, "Gloria_Macapagal_Arroyo", 2)  # same person, tenant B
    probe = image_file(lfw_image("Gloria_Macapagal_Arroyo", 3))

    assert_problem(await other.get(f"/v1/users/{mine}"), 404, "user-not-found")
    assert_problem(await other.get(f"/v1/users/{mine}/faces"), 404, "user-not-found")
    assert_problem(await other.delete(f"/v1/users/{mine}"), 404, "user-not-found")
    assert mine not in [u["id"] for u in (await other.get("/v1/users")).json()["items"]]
    # verifying against A's user from B fails like an unknown user
    crossed = (await other.post(f"/v1/users/{mine}/verify", files=probe)).json()
    assert crossed["match"] is False
    # identification in B finds only B's user, in A only A's
    found_b = (await other.post("/v1/identify", files=probe)).json()
    assert found_b["match"] == theirs
    assert mine not in [c["user_id"] for c in found_b["candidates"]]
    found_a = (await client.post("/v1/identify", files=probe)).json()
    assert found_a["match"] == mine
    assert theirs not in [c["user_id"] for c in found_a["candidates"]]
    # the audit trail too
    b_events = (await other.get("/v1/audit", params={"limit": 500})).json()["items"]
    assert {e["actor"] for e in b_events} <= {"test-admin", "cli"}  # never A's key
    a_events = (await client.get("/v1/audit", params={"limit": 500})).json()["items"]
    assert theirs not in [e["user_id"] for e in a_events]
    assert (await other.get("/v1/keys")).json()["items"][0]["name"].startswith("test-")
    assert all(k["name"] != "bootstrap" for k in (await other.get("/v1/keys")).json()["items"])


# --- lockout -----------------------------------------------------------------------------


async def test_lockout_after_five_failures_grows_and_resets(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    user_id = await enrolled_user(client, "Lleyton_Hewitt", 1)
    wrong = image_file(lfw_image("Colin_Powell", 2))
    right = image_file(lfw_image("Lleyton_Hewitt", 2))
    for _ in range(5):
        answer = await client.post(f"/v1/users/{user_id}/verify", files=wrong)
        assert answer.status_code == 200
        assert answer.json()["match"] is False
    locked = await client.post(f"/v1/users/{user_id}/verify", files=right)
    assert_problem(locked, 429, "too-many-attempts")
    first_wait = int(locked.headers["retry-after"])
    assert 25 <= first_wait <= 30

    state: AppState = app.state.facesvc

    async def let_time_pass() -> None:
        async with session_scope(state.sessionmaker) as session:
            await session.execute(
                update(LoginAttempts)
                .where(LoginAttempts.subject_id == uuid.UUID(user_id))
                .values(locked_until=utcnow() - timedelta(seconds=1))
            )

    await let_time_pass()
    assert (await client.post(f"/v1/users/{user_id}/verify", files=wrong)).status_code == 200
    again = await client.post(f"/v1/users/{user_id}/verify", files=right)
    assert_problem(again, 429, "too-many-attempts")
    assert int(again.headers["retry-after"]) > first_wait  # the delay doubles: ~60 s

    await let_time_pass()
    ok = await client.post(f"/v1/users/{user_id}/verify", files=right)
    assert ok.json()["match"] is True  # and the count is reset:
    for _ in range(4):
        assert (await client.post(f"/v1/users/{user_id}/verify", files=wrong)).status_code == 200
    assert (await client.post(f"/v1/users/{user_id}/verify", files=right)).json()["match"]


async def test_unknown_user_and_wrong_face_look_the_same(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Same answer, same model work: both embed the probe (counted model calls, not timed:
    a timing ratio depends on the machine, the work does not)."""
    user_id = await enrolled_user(client, "Naomi_Watts", 1)
    wrong = image_file(lfw_image("Colin_Powell", 3))
    runners = app.state.facesvc.registry.runners
    calls: dict[str, list[tuple[int, ...]]] = {"wrong": [], "unknown": []}
    answers: dict[str, httpx.Response] = {}
    for _ in range(3):
        for kind, target in (("wrong", user_id), ("unknown", str(uuid.uuid4()))):
            before = tuple(runner.calls for runner in runners)
            answers[kind] = await client.post(f"/v1/users/{target}/verify", files=wrong)
            calls[kind].append(tuple(r.calls - b for r, b in zip(runners, before, strict=True)))
    a, b = answers["wrong"].json(), answers["unknown"].json()
    assert answers["wrong"].status_code == answers["unknown"].status_code == 200
    assert {k: v for k, v in a.items() if k != "user_id"} == {
        k: v for k, v in b.items() if k != "user_id"
    }
    assert calls["wrong"] == calls["unknown"], calls
    assert all(sum(made) >= 2 for made in calls["unknown"]), calls  # detected and embedded


# --- consent, audit, erasure ---------------------------------------------------------------


async def test_enrolment_needs_consent(client: httpx.AsyncClient) -> None:
    user_id = (await client.post("/v1/users", json={"name": "No consent"})).json()["id"]
    photo = image_file(lfw_image("George_W_Bush", 10))  # nobody else's test uses him
    refused = await client.post(
        f"/v1/users/{user_id}/faces", files=photo, data={"consent": "false"}
    )
    assert_problem(refused, 422, "consent-required")
    missing = await client.post(f"/v1/users/{user_id}/faces", files=photo)
    assert_problem(missing, 422, "validation-error")
    bulk = await client.post(f"/v1/users/{user_id}/faces/bulk", files={"images": photo["image"]})
    assert_problem(bulk, 422, "validation-error")
    assert (await client.get(f"/v1/users/{user_id}")).json()["face_count"] == 0
    ok = await client.post(f"/v1/users/{user_id}/faces", files=photo, data={"consent": "true"})
    assert ok.json()["consented_at"] is not None
    assert (await client.delete(f"/v1/users/{user_id}")).status_code == 204


async def test_audit_trail_records_who_did_what(client: httpx.AsyncClient) -> None:
    since = utcnow().isoformat()
    user_id = await enrolled_user(client, "Jean_Chretien", 1)
    await client.post(
        f"/v1/users/{user_id}/verify", files=image_file(lfw_image("Jean_Chretien", 2))
    )
    await client.post("/v1/identify", files=image_file(lfw_image("Jean_Chretien", 3)))
    key = (await client.post("/v1/keys", json={"name": "audited", "scopes": ["verify"]})).json()
    await client.delete(f"/v1/keys/{key['id']}")
    await client.delete(f"/v1/users/{user_id}")
    page = (await client.get("/v1/audit", params={"since": since, "limit": 50})).json()
    mine = [e for e in page["items"] if e["user_id"] in (user_id, None)]
    actions = [e["action"] for e in reversed(mine)]
    for expected in (
        "user.create",
        "face.enrol",
        "verify",
        "key.create",
        "key.revoke",
        "user.delete",
    ):
        assert expected in actions, actions
    verify = next(e for e in mine if e["action"] == "verify")
    assert verify["result"] == "match"
    assert verify["similarity"] > 0.4
    assert verify["actor"] == "bootstrap"
    assert verify["request_id"]
    identify = [e for e in page["items"] if e["action"] == "identify"]
    assert identify[0]["result"] == "match"
    only_verify = (
        await client.get("/v1/audit", params={"action": "verify", "since": since})
    ).json()
    assert {e["action"] for e in only_verify["items"]} == {"verify"}
    assert_problem(
        await client.get("/v1/audit", params={"action": "nope"}), 422, "validation-error"
    )


async def test_deleting_a_user_leaves_nothing_of_their_face(
    client: httpx.AsyncClient, app: FastAPI, settings: object
) -> None:
    state: AppState = app.state.facesvc
    user_id = await enrolled_user(client, "Tiger_Woods", 1)
    uid = uuid.UUID(user_id)
    by_user = bindparam("u", uid, type_=Uuid)  # stored as each backend stores uuids
    async with state.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT id, embedding, key_id FROM faces WHERE user_id = :u").bindparams(
                    by_user
                )
            )
        ).all()
    assert len(rows) == 1
    face_id, blob, key_id = rows[0]
    assert key_id == "test1"  # encrypted at rest under the configured data key
    blob = bytes(blob)
    assert (await client.delete(f"/v1/users/{user_id}")).status_code == 204

    async with state.engine.connect() as conn:
        for table, column in (
            ("users", "id"),
            ("faces", "user_id"),
            ("login_attempts", "subject_id"),
        ):
            query = text(f"SELECT count(*) FROM {table} WHERE {column} = :u")  # noqa: S608
            count = (await conn.execute(query.bindparams(by_user))).scalar_one()
            assert count == 0, table
    if state.engine.url.get_backend_name() != "sqlite":
        return  # PostgreSQL: dead rows stay in its files until VACUUM (README, Security)
    # and not in the raw files either: deleted pages are zeroed, the WAL is truncated
    database = Path(state.engine.url.database or "")
    files = [database, database.with_name(database.name + "-wal")]
    for _ in range(50):
        raw = b"".join(p.read_bytes() for p in files if p.exists())
        if blob[:32] not in raw:
            break
        await asyncio.sleep(0.1)
    assert blob[:32] not in raw, "the erased embedding's ciphertext is still on disk"
    assert uuid.UUID(str(face_id)).hex.encode() not in raw  # nor the face's row
    # nor in the embedded gallery's snapshot sealed on disk (FACESVC_GALLERY_CACHE_DIR)
    plain = state.cipher.decrypt(blob, key_id, uuid.UUID(str(face_id)))
    await assert_not_sealed(state, plain)


async def assert_not_sealed(state: AppState, plain: bytes) -> None:
    """No file of the embedded gallery's cache folder holds ``plain`` (an erased face's vector)
    in the clear, nor decrypts to a snapshot that holds it."""
    from facesvc.gallery.lean import LeanGallery

    gallery = state.gallery
    if not isinstance(gallery, LeanGallery) or gallery._sealed is None:
        return
    if gallery._reseal_task is not None:
        await gallery._reseal_task  # the rewrite without the erased face
    sealed = gallery._sealed
    for entry in sealed.folder.iterdir():
        if entry.is_file():
            assert plain not in entry.read_bytes(), entry
    target = Path("/dev/shm") / f"facesvc-test-{uuid.uuid4().hex}"
    try:
        if sealed.restore(target, None, 2**62, 0) is not None:
            assert plain not in target.read_bytes(), "the erased vector is in the sealed file"
    finally:
        target.unlink(missing_ok=True)


async def test_a_burst_of_guesses_gets_no_more_than_the_lockout_allows(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Attempts are counted before the probe is compared: 12 concurrent guesses at one user
    get at most 5 answers, the rest 429 (none slips in while the first are computed). A
    refused attempt stops its model work but lets its database read finish: a query cancelled
    mid-flight would leave a broken pooled connection (logged as an error)."""
    user_id = await enrolled_user(client, "Gonzalo_Sanchez_de_Lozada", 1)
    wrong = lfw_image("Colin_Powell", 5)
    with caplog.at_level(logging.ERROR):
        answers = await asyncio.gather(
            *(
                client.post(f"/v1/users/{user_id}/verify", files=image_file(wrong))
                for _ in range(12)
            )
        )
        for _ in range(10):  # locked now: each is refused while its read is in flight
            locked = await client.post(f"/v1/users/{user_id}/verify", files=image_file(wrong))
            assert locked.status_code == 429
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) <= 5, statuses
    assert statuses.count(429) >= 7, statuses
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    await client.delete(f"/v1/users/{user_id}")


async def test_lockout_delay_is_capped_for_any_number_of_failures() -> None:
    from facesvc.services.recognition.lockout import LockoutPolicy

    policy = LockoutPolicy(max_failures=5, base_delay_s=30, max_delay_s=3600)
    assert policy.delay_after(4) is None
    assert policy.delay_after(5) == 30
    assert policy.delay_after(6) == 60
    assert policy.delay_after(10**6) == 3600  # no overflow, however many


async def test_audit_since_out_of_range_is_a_422(client: httpx.AsyncClient) -> None:
    for since in ("0001-01-01T00:00:00", "0001-01-01T00:00:00+01:00"):
        response = await client.get("/v1/audit", params={"since": since})
        assert_problem(response, 422, "validation-error")


async def test_legacy_names_refuse_unstorable_characters(client: httpx.AsyncClient) -> None:
    for route in ("/face_register", "/face_login"):
        response = await client.post(
            route,
            data={"name": "a\x00b", "consent": "true"},
            files=image_file(lfw_image("Colin_Powell", 1)),
        )
        assert_problem(response, 422, "validation-error")


async def test_requests_waiting_on_the_models_hold_no_database_connection(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is checked in a short session of its own; a request takes a connection only
    when it needs the database, so 16 identifications held at the detector hold none: a
    10-minute load test found 30 s pool waits and 500s when every request held one.
    The detector is held at a gate, so what is measured does not depend on its speed."""
    state: AppState = app.state.facesvc
    pool = state.engine.sync_engine.pool
    runner = state.registry.detector
    photo = image_file(lfw_image("Colin_Powell", 1))
    with gated(runner, monkeypatch) as gate:
        in_flight = [
            asyncio.ensure_future(client.post("/v1/identify", files=photo)) for _ in range(16)
        ]
        await eventually(lambda: waiting_items(runner, gate) == 16, "16 photos at the detector")
        # Their key lookups and gallery refreshes end on their own; the job runner's poll may
        # hold one connection for a moment. Requests that held theirs would keep 16 out.
        await eventually(
            lambda: pool.checkedout() <= 1,  # type: ignore[attr-defined]
            "at most one connection checked out while the requests wait on the model",
        )
        samples = []
        for _ in range(50):
            samples.append(pool.checkedout())  # type: ignore[attr-defined]
            await asyncio.sleep(0.002)
        assert max(samples) <= 1, samples
        assert not any(task.done() for task in in_flight), "all still wait on the detector"
    responses = await asyncio.gather(*in_flight)
    assert [r.status_code for r in responses] == [200] * 16
