"""The OpenAPI schema is complete enough to generate good clients, and committed.

Checked over the whole schema, so a new route is held to the same bar: summary, one declared
tag, an explicit readable operation id, typed request and response bodies, examples on
request bodies, every error as problem+json, the API key scheme. ``openapi.json`` at the
repo root must equal what the code produces (regenerate: ``facesvc openapi -o openapi.json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from facesvc import __version__
from facesvc.api import schemas
from facesvc.api.problems import PROBLEM_JSON, Problem
from facesvc.app import create_app
from facesvc.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi.json"
REF = "#/components/schemas/"
METHODS = {"get", "post", "put", "patch", "delete"}
OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# FastAPI's generated ids (no operation_id= on the route) end with the path and method,
# detect_faces_v1_detect_post, and change whenever a path or a function is renamed.
GENERATED_ID = re.compile(r"_(get|post|put|patch|delete)$")
PUBLIC_TAGS = {"health"}  # probes and problem docs: no API key
NOT_IN_SCHEMA = ("/demo", "/metrics", "/docs", "/redoc", "/static")


@pytest.fixture(scope="module")
def app() -> FastAPI:
    # The same call as `facesvc openapi`: nothing is loaded, the lifespan never runs.
    return create_app(Settings())


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith(REF), ref
    resolved: dict[str, Any] = schema["components"]["schemas"][ref.removeprefix(REF)]
    return resolved


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def is_file(field: dict[str, Any]) -> bool:
    """A multipart file field (FastAPI's UploadFile), or a list of them."""
    field = field.get("items", field) if field.get("type") == "array" else field
    return bool(field.get("contentMediaType") == "application/octet-stream")


def uploads(schema: dict[str, Any], op: dict[str, Any]) -> str:
    """ "none", "one" (only single image fields) or "many" (a list of images)."""
    media = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if media is None:
        return "none"
    fields = resolve(schema, media["schema"]).get("properties", {}).values()
    files = [f for f in fields if is_file(f)]
    if any(f.get("type") == "array" for f in files):
        return "many"
    return "one" if files else "none"


def differences(old: Any, new: Any, where: str = "") -> Iterator[str]:
    """JSON pointers where two documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            pointer = f"{where}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key not in new:
                yield f"{pointer} (removed)"
            elif key not in old:
                yield f"{pointer} (added)"
            else:
                yield from differences(old[key], new[key], pointer)
    elif old != new:
        yield where or "/"


def test_committed_schema_is_up_to_date(schema: dict[str, Any]) -> None:
    assert COMMITTED.is_file(), "openapi.json is missing: run `facesvc openapi -o openapi.json`"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    changed = list(differences(committed, schema))
    assert not changed, (
        "openapi.json differs from the code's schema: run `facesvc openapi -o openapi.json` "
        "(or `make openapi`) and commit it; clients are generated from it. Differences:\n  "
        + "\n  ".join(changed[:20])
    )


def test_info_and_tags(schema: dict[str, Any]) -> None:
    info = schema["info"]
    assert info["title"] == "facesvc"
    assert info["version"] == __version__
    assert info["description"].strip()
    declared = {tag["name"]: tag for tag in schema["tags"]}
    assert all(tag.get("description") for tag in declared.values())
    used = {tag for _, _, op in operations(schema) for tag in op.get("tags", [])}
    assert used == set(declared), "every tag used is declared with a description, and used"


def test_every_operation_has_a_summary_one_tag_and_a_readable_id(schema: dict[str, Any]) -> None:
    ids = []
    for path, method, op in operations(schema):
        where = f"{method.upper()} {path}"
        assert op.get("summary", "").strip(), f"{where}: no summary"
        assert len(op.get("tags", [])) == 1, f"{where}: tags {op.get('tags')}"
        operation_id = op.get("operationId", "")
        assert OPERATION_ID.fullmatch(operation_id), f"{where}: operationId {operation_id!r}"
        assert not GENERATED_ID.search(operation_id), f"{where}: {operation_id} looks generated"
        ids.append(operation_id)
    assert len(ids) == len(set(ids)), "operation ids are unique"
    assert len(ids) >= 20


def test_every_parameter_is_described(schema: dict[str, Any]) -> None:
    for path, method, op in operations(schema):
        for parameter in op.get("parameters", []):
            where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
            assert parameter.get("description", "").strip(), f"{where}: no description"
            schema_ = parameter.get("schema", {})
            members = schema_.get("anyOf", [schema_])  # optional: [typed, null]
            assert all(m.get("type") or m.get("$ref") for m in members), f"{where}: untyped"


def test_request_bodies_are_typed_with_examples(schema: dict[str, Any]) -> None:
    bodies = 0
    for path, method, op in operations(schema):
        if "requestBody" not in op:
            continue
        bodies += 1
        where = f"{method.upper()} {path}"
        content = op["requestBody"]["content"]
        assert set(content) <= {"application/json", "multipart/form-data"}, where
        for media_type, media in content.items():
            ref = media["schema"].get("$ref", "")
            assert ref.startswith(REF), f"{where}: the body is not a named schema"
            body = resolve(schema, media["schema"])
            properties = body.get("properties", {})
            assert properties, f"{where}: the body has no fields"
            if media_type == "application/json":
                examples = media.get("examples", {})
                assert examples, f"{where}: no example for {media_type}"
                # Each example is a valid body (validated by the model behind the schema).
                model = getattr(schemas, ref.removeprefix(REF))
                assert issubclass(model, BaseModel)
                for name, example in examples.items():
                    assert example.get("summary"), f"{where}: example {name} has no summary"
                    model.model_validate(example["value"])
            else:
                for name, field in properties.items():
                    assert field.get("description"), f"{where}: field {name} undescribed"
                    if is_file(field):
                        # 3.0's "format: binary" beside 3.1's contentMediaType: client
                        # generators (openapi-python-client) only make a file field of it.
                        files = field.get("items", field)
                        assert files.get("format") == "binary", (
                            f"{where}: file field {name} needs File(json_schema_extra="
                            "BINARY_FILE) (BINARY_FILES for a list; facesvc.api.deps)"
                        )
                    else:
                        assert field.get("examples"), f"{where}: field {name} has no example"
    assert bodies >= 10


def test_success_responses_are_typed(schema: dict[str, Any]) -> None:
    for path, method, op in operations(schema):
        where = f"{method.upper()} {path}"
        successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert len(successes) == 1, f"{where}: {sorted(successes)}"
        ((status, response),) = successes.items()
        if status == "204":
            assert "content" not in response, f"{where}: 204 with a body"
            continue
        content = response["content"]
        assert "application/json" in content, where
        json_schema = content["application/json"]["schema"]
        assert json_schema.get("$ref", "").startswith(REF), f"{where}: untyped {status} body"
        for media_type, media in content.items():
            if media_type.startswith("image/"):
                assert media["schema"] == {"type": "string", "format": "binary"}, where


def test_errors_are_documented_as_problem_json(schema: dict[str, Any]) -> None:
    problem = f"{REF}{Problem.__name__}"
    for path, method, op in operations(schema):
        where = f"{method.upper()} {path}"
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        if op.get("parameters") or "requestBody" in op:
            assert "422" in errors, f"{where}: validation errors are not documented"
        if "requestBody" in op:
            # A body the framework cannot parse (JSON that is not UTF-8, multipart without a
            # boundary) is answered 400 before the route runs.
            assert "400" in errors, f"{where}: an unparsable body's 400 is not documented"
        if uploads(schema, op) == "one":
            # One image: corrupt, too large, not an image, no face, models not ready.
            assert {"400", "413", "415", "422", "503"} <= set(errors), f"{where}: {set(errors)}"
        elif uploads(schema, op) == "many":
            # Several: each image's problem may be reported per item, but not these.
            assert {"413", "422", "503"} <= set(errors), f"{where}: {set(errors)}"
        for status, response in errors.items():
            content = response.get("content", {})
            assert PROBLEM_JSON in content, f"{where} {status}: not application/problem+json"
            assert content[PROBLEM_JSON].get("schema", {}).get("$ref") == problem, where
            assert response.get("description"), where
    assert "HTTPValidationError" not in schema["components"]["schemas"], (
        "FastAPI's default 422 is documented somewhere, but the service answers "
        "validation errors as problem+json: add 422 to the route's problem_responses"
    )


def test_api_key_scheme_is_declared_and_required_outside_the_probes(
    schema: dict[str, Any],
) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert {k: {f: v for f, v in s.items() if f != "description"} for k, s in schemes.items()} == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    for path, method, op in operations(schema):
        where = f"{method.upper()} {path}"
        if set(op["tags"]) & PUBLIC_TAGS:
            assert "security" not in op, f"{where}: a probe must not need a key"
        else:
            assert op.get("security") == [{"ApiKey": []}, {"Bearer": []}], f"{where}: no key"


def test_every_reference_resolves_and_every_component_is_used(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    used = set()
    for ref in refs(schema["paths"]):
        used.add(ref)
    # Follow references inside components too.
    pending = list(used)
    while pending:
        name = pending.pop().removeprefix(REF)
        assert name in components, f"{REF}{name} does not resolve"
        for ref in refs(components[name]):
            if ref not in used:
                used.add(ref)
                pending.append(ref)
    assert {ref.removeprefix(REF) for ref in used} == set(components), "unused components"


def test_deprecated_routes_are_the_legacy_ones(schema: dict[str, Any]) -> None:
    for path, method, op in operations(schema):
        assert op.get("deprecated", False) == (op["tags"] == ["legacy"]), f"{method} {path}"


async def test_pages_and_metrics_are_not_in_the_schema(
    schema: dict[str, Any], app: FastAPI
) -> None:
    for path in schema["paths"]:
        assert not path.startswith(NOT_IN_SCHEMA), path
    # ... but served: the demo page and its assets need no model, so no lifespan runs here.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facesvc.test") as client:
        page = await client.get("/demo")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset, content_type in (("demo.js", "text/javascript"), ("demo.css", "text/css")):
            assert f'"demo/{asset}"' in page.text
            response = await client.get(f"/demo/{asset}")
            assert response.status_code == 200, asset
            assert response.headers["content-type"].startswith(content_type)
        assert (await client.get("/demo/index.html")).status_code == 404
        assert (await client.get("/demo/..%2Fdemo.py")).status_code == 404
