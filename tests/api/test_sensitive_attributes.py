"""Age, gender and expression only for a tenant that turned them on (issue 25).

Emotion recognition and biometric categorisation are prohibited or high-risk under the EU AI
Act (Art. 5(1)(f) and (g), Annex III): a tenant asks for them with PATCH /v1/tenant
{"sensitive_attributes": true}; until then /v1/detect refuses them with 403
`attributes-not-enabled`, before any image work. Pose stays available to everyone.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from facesvc.container import AppState
from facesvc.errors import AttributesNotEnabledError
from facesvc.security.keys import Caller
from facesvc.services.analysis import require_attributes_allowed
from facesvc.services.tenants import tenant_named
from tests.support.api import MakeClient, assert_problem, new_key, set_sensitive_attributes
from tests.support.data import image_file, lfw_image
from tests.support.sql import counted_statements

SETTING = 'PATCH /v1/tenant {"sensitive_attributes": true}'


def tenant_name(what: str) -> str:
    """A tenant of the test's own: the session app's tenants outlive each test."""
    return f"attributes-{what}-{uuid.uuid4().hex[:8]}"


async def detect(
    client: httpx.AsyncClient, attributes: str, data: bytes | None = None
) -> httpx.Response:
    photo = lfw_image("Colin_Powell", 1) if data is None else data
    return await client.post(
        "/v1/detect", params={"attributes": attributes}, files=image_file(photo)
    )


def assert_refused(response: httpx.Response, *attributes: str) -> None:
    body = assert_problem(response, 403, "attributes-not-enabled")
    detail = str(body["detail"])
    assert SETTING in detail, detail
    assert detail.startswith(", ".join(attributes) + ":"), detail


@pytest.mark.parametrize(
    ("asked", "refused"),
    [
        ("age", ["age"]),
        ("gender", ["gender"]),
        ("expression", ["expression"]),
        ("pose,Gender", ["gender"]),
        ("all", ["age", "gender", "expression"]),
    ],
)
async def test_off_by_default_and_refused_before_any_image_work(
    app: FastAPI, as_key: MakeClient, data_dir: Path, asked: str, refused: list[str]
) -> None:
    """Any valid key of a tenant that did not turn them on: 403, with the setting named. The
    refusal comes before the image is even decoded: not an image still answers 403, and no
    model ran."""
    client = as_key(await new_key(app, tenant_name("off"), "verify"))
    registry = app.state.facesvc.registry
    runners = [registry.detector, registry.mesh, *registry.attributes.values()]
    before = [runner.calls for runner in runners]

    assert_refused(await detect(client, asked), *refused)
    assert_refused(await detect(client, asked, b"not an image at all"), *refused)

    assert [runner.calls for runner in runners] == before


async def test_refused_before_the_upload_is_read(app: FastAPI, as_key: MakeClient) -> None:
    """An upload over FACESVC_MAX_UPLOAD_BYTES would answer 413; asking for gender answers
    403 first (the refusal depends on nothing in the request body)."""
    client = as_key(await new_key(app, tenant_name("upload"), "verify"))
    oversized = b"\xff" * (app.state.facesvc.settings.max_upload_bytes + 1)
    assert_problem(await detect(client, "pose", oversized), 413, "payload-too-large")
    assert_refused(await detect(client, "gender", oversized), "gender")


async def test_pose_and_plain_detection_need_no_setting(
    app: FastAPI, as_key: MakeClient, data_dir: Path
) -> None:
    """In the same tenant that is refused gender."""
    client = as_key(await new_key(app, tenant_name("pose"), "verify"))
    assert_refused(await detect(client, "gender"), "gender")
    response = await detect(client, "pose")
    assert response.status_code == 200, response.text
    (face,) = response.json()["faces"]
    assert set(face["attributes"]["pose"]) == {"yaw", "pitch", "roll"}
    assert face["attributes"]["gender"] is None
    plain = await client.post("/v1/detect", files=image_file(lfw_image("Colin_Powell", 1)))
    assert plain.status_code == 200, plain.text
    assert plain.json()["faces"][0]["attributes"] is None


async def test_a_tenant_turns_them_on_and_off_again(
    app: FastAPI, as_key: MakeClient, data_dir: Path
) -> None:
    """GET shows the setting; PATCH changes it (audited) and every key of the tenant sees the
    change at its next request, a key already seen (its caller cached) included."""
    tenant = tenant_name("switch")
    admin = as_key(await new_key(app, tenant, "admin"))
    kiosk = as_key(await new_key(app, tenant, "verify"))
    settings = await admin.get("/v1/tenant")
    assert settings.status_code == 200, settings.text
    assert settings.json()["sensitive_attributes"] is False
    assert_refused(await detect(kiosk, "gender"), "gender")  # the kiosk's caller is cached

    await set_sensitive_attributes(admin, True)
    assert (await admin.get("/v1/tenant")).json()["sensitive_attributes"] is True
    response = await detect(kiosk, "gender,expression")
    assert response.status_code == 200, response.text
    (face,) = response.json()["faces"]
    assert face["attributes"]["gender"]["value"] == "male"
    assert face["attributes"]["expression"]["value"]
    assert face["attributes"]["age"] is None  # still only what is asked

    await set_sensitive_attributes(admin, False)
    assert_refused(await detect(kiosk, "gender"), "gender")
    assert_refused(await detect(admin, "age"), "age")

    audit = (await admin.get("/v1/audit", params={"action": "tenant.update"})).json()
    assert [event["result"] for event in audit["items"]] == [
        "sensitive_attributes:false",
        "sensitive_attributes:true",
    ]
    # setting it to what it already is changes nothing and audits nothing
    await set_sensitive_attributes(admin, False)
    again = (await admin.get("/v1/audit", params={"action": "tenant.update"})).json()
    assert again["total"] == 2


async def test_another_tenant_is_unaffected(
    app: FastAPI, as_key: MakeClient, data_dir: Path
) -> None:
    admin = as_key(await new_key(app, tenant_name("allowed"), "admin"))
    other = as_key(await new_key(app, tenant_name("other"), "admin"))
    await set_sensitive_attributes(admin, True)
    assert (await detect(admin, "age")).status_code == 200
    assert_refused(await detect(other, "age"), "age")
    assert (await other.get("/v1/tenant")).json()["sensitive_attributes"] is False


async def test_a_cached_caller_carries_the_setting(
    app: FastAPI, as_key: MakeClient, data_dir: Path
) -> None:
    """The setting is read with the key (one query, or none for a cached caller): a detection
    with attributes issues no query of its own on `tenants`."""
    admin = as_key(await new_key(app, tenant_name("cached"), "admin"))
    await set_sensitive_attributes(admin, True)
    assert (await detect(admin, "gender")).status_code == 200

    state: AppState = app.state.facesvc
    with counted_statements(state.engine) as statements:
        response = await detect(admin, "gender")
    assert response.status_code == 200, response.text
    tenant_reads = [s for s in statements if "FROM tenants" in s and "JOIN tenants" not in s]
    assert tenant_reads == []


async def test_a_caller_not_read_with_a_key_reads_its_tenant(
    app: FastAPI, as_key: MakeClient
) -> None:
    """The CLI's operator carries no setting: the tenant's row decides."""
    name = tenant_name("operator")
    admin = as_key(await new_key(app, name, "admin"))
    state: AppState = app.state.facesvc
    async with state.sessionmaker() as session:
        tenant = await tenant_named(session, name)
    assert tenant is not None
    operator = Caller.operator(tenant.id)
    assert operator.sensitive_attributes is None
    await require_attributes_allowed(operator, {"pose"}, state.sessionmaker)
    with pytest.raises(AttributesNotEnabledError, match=r"^age, expression:"):
        await require_attributes_allowed(operator, {"expression", "age"}, state.sessionmaker)
    await set_sensitive_attributes(admin, True)
    await require_attributes_allowed(operator, {"expression", "age"}, state.sessionmaker)
