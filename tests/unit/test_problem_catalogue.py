"""The error catalogue (``facesvc.errors``) is the one list of problem types.

Every class in it has a unique slug, a title and a description; every slug is served at
``GET /problems/{slug}``; every problem the OpenAPI document names or documents exists in it;
and the problem+json a class turns into keeps its shape (members, extensions, headers).
"""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from facesvc import errors
from facesvc.api.problems import PROBLEM_JSON, problem_of, problem_response
from facesvc.app import create_app
from facesvc.inference.quality import QualityProblem
from facesvc.settings import Settings

CATALOGUE = list(errors.catalogue())
SLUGS = {cls.slug for cls in CATALOGUE}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    # No lifespan: /problems/{slug} needs no model and no database.
    return create_app(Settings())


def test_every_problem_type_has_a_unique_slug_a_title_and_a_description() -> None:
    assert len(CATALOGUE) == len(SLUGS) > 40
    for cls in CATALOGUE:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", cls.slug), cls
        assert 400 <= cls.status <= 599, cls
        assert cls.title.strip(), cls
        assert cls.description.strip(), cls
        for attribute in ("slug", "title", "description"):
            assert attribute in vars(cls), f"{cls.__name__} inherits its {attribute}"


def test_a_family_cannot_be_raised() -> None:
    for family in (errors.ServiceError, errors.NotFoundError, errors.ImageError):
        with pytest.raises(TypeError, match="family"):
            family("no slug")


def test_every_quality_reason_is_a_problem_type() -> None:
    for reason in get_args(QualityProblem):
        cls = errors.FaceQualityError.for_reason(reason)
        assert cls.slug == reason
        assert cls.status == 422


async def test_every_slug_is_served(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facesvc.test") as client:
        for cls in CATALOGUE:
            response = await client.get(f"/problems/{cls.slug}")
            assert response.status_code == 200, cls.slug
            assert response.json() == {
                "type": f"/problems/{cls.slug}",
                "title": cls.title,
                "description": cls.description,
            }
        missing = await client.get("/problems/no-such-problem")
        assert missing.status_code == 404
        assert missing.json()["type"] == "/problems/not-found"


def test_every_problem_the_openapi_document_names_exists(app: FastAPI) -> None:
    schema = app.openapi()
    named = set(re.findall(r"/problems/([a-z0-9-]+)", json.dumps(schema)))
    slug_param = schema["paths"]["/problems/{slug}"]["get"]["parameters"][0]
    named.update(slug_param["schema"].get("examples", []) + slug_param.get("examples", []))
    assert named, "the schema names no problem type: this test reads it wrongly"
    assert named <= SLUGS, named - SLUGS

    statuses = {cls.status for cls in CATALOGUE}
    documented = {
        int(status)
        for item in schema["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for status, response in operation.get("responses", {}).items()
        if PROBLEM_JSON in response.get("content", {})
    }
    assert documented, "no problem responses found: this test reads the schema wrongly"
    assert documented <= statuses, documented - statuses


def _request(path: str = "/v1/verify") -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": []})


def _body(error: errors.FacesvcError) -> tuple[dict[str, Any], dict[str, str]]:
    response = problem_response(_request(), error)
    assert response.media_type == PROBLEM_JSON
    assert response.status_code == error.status
    return json.loads(response.body), dict(response.headers)


def test_problem_json_keeps_its_members_extensions_and_headers() -> None:
    body, headers = _body(errors.LockedOutError("retry in 7 s", retry_after=7))
    assert body == {
        "type": "/problems/too-many-attempts",
        "title": "Too many failed verifications",
        "status": 429,
        "detail": "retry in 7 s",
        "instance": "/v1/verify",
    }
    assert headers["retry-after"] == "7"

    body, headers = _body(errors.QueueFullError("facenet", 9, 8))
    assert body["model"] == "facenet"
    assert body["detail"] == "model 'facenet' is overloaded: 9 items queued (limit 8)"
    assert headers["retry-after"] == "1"

    _, headers = _body(errors.UnauthorizedError("an API key is required"))
    assert headers["www-authenticate"] == 'Bearer realm="facesvc", ApiKey header="X-API-Key"'
    _, headers = _body(errors.ModelsLoadingError("models are still loading"))
    assert headers["retry-after"] == "5"

    body, headers = _body(errors.HTTPError(418, "teapot", headers={"X-Extra": "1"}))
    assert (body["type"], body["title"], body["status"]) == (
        "/problems/http-error",
        "HTTP error",
        418,
    )
    assert headers["x-extra"] == "1"

    quality = {"face_size_px": 12.0}
    error = errors.FaceQualityError.for_reason("face-too-small")("too small", quality=quality)
    body, _ = _body(error)
    assert body["title"] == "Face too small to enrol"
    assert body["quality"] == quality
    item = problem_of(errors.CorruptImageError("truncated"), instance="photo 3")
    assert item.model_dump(exclude_none=True) == {
        "type": "/problems/corrupt-image",
        "title": "Corrupt image",
        "status": 400,
        "detail": "truncated",
        "instance": "photo 3",
    }
