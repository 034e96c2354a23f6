"""Strings, metadata and pagination are bounded and validated: 4xx, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import assert_problem
from tests.support.data import image_file


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": 501},
        {"limit": "ten"},
        {"limit": "1e3"},
        {"offset": -1},
        {"offset": 10_000_001},
        {"offset": 2**70},
    ],
)
async def test_pagination_out_of_bounds_is_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    assert_problem(await client.get("/v1/users", params=params), 422, "validation-error")


async def test_largest_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/users", params={"limit": 500, "offset": 10_000_000})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


@pytest.mark.parametrize("top_k", [0, -5, 101, "all"])
async def test_identify_top_k_out_of_bounds_is_422(
    client: httpx.AsyncClient, top_k: object
) -> None:
    response = await client.post(
        "/v1/identify", params={"top_k": top_k}, files=image_file(b"\xff\xd8\xff")
    )
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a", "external_id": "x" * 201},
        {"name": "a", "external_id": "   "},
        {"name": "a", "metadata": ["not", "an", "object"]},
        {"name": "a", "metadata": "text"},
        {"name": "a", "metadata": {"k": "v" * 4096}},
        {"name": "a", "metadata": {f"k{i}": i for i in range(1000)}},
        {"name": "a", "unknown_field": 1},
        {"name": 12345},
        {"name": ["a"]},
    ],
)
async def test_user_fields_are_bounded(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post("/v1/users", json=body), 422, "validation-error")


async def test_deeply_nested_metadata_is_a_client_error(client: httpx.AsyncClient) -> None:
    # Small in bytes, deep enough to trouble a recursive encoder.
    nested = b'{"a":' * 700 + b"1" + b"}" * 700
    response = await client.post(
        "/v1/users",
        content=b'{"name": "deep", "metadata": ' + nested + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    flood = b"[" * 100_000 + b"]" * 100_000  # a body nested past the JSON parser's limit
    response = await client.post(
        "/v1/users", content=flood, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text


async def test_metadata_at_its_limit_round_trips(client: httpx.AsyncClient) -> None:
    # Near the 4096-byte bound as it is measured (JSON with non-ASCII escaped: "é" is 6).
    note = "é" * 100 + "x" * 3000
    metadata = {"note": note, "tags": ["a", "b"], "n": 1.5, "ok": True, "none": None}
    created = await client.post("/v1/users", json={"name": "Bounded", "metadata": metadata})
    assert created.status_code == 201, created.text
    fetched = await client.get(f"/v1/users/{created.json()['id']}")
    assert fetched.json()["metadata"] == metadata


async def test_legacy_form_name_is_bounded(client: httpx.AsyncClient) -> None:
    for route in ("/face_register", "/face_login"):
        response = await client.post(
            route, data={"name": "x" * 201}, files=image_file(b"\xff\xd8\xff")
        )
        assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "a\\u0000b"}',
        b'{"name": "ok", "external_id": "e\\u0000"}',
        b'{"name": "ok", "metadata": {"k": "\\ud800"}}',
    ],
    ids=["nul-name", "nul-external-id", "surrogate-metadata"],
)
async def test_text_the_databases_cannot_store_is_422(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    response = await client.post(
        "/v1/users", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation-error")
