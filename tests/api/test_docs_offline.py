"""Swagger UI and ReDoc work with no internet: every asset is served by the service itself."""

from __future__ import annotations

import re

import httpx
import pytest

# Every src= / href= / spec-url= in the page, and the spec url Swagger UI is told to load.
_REFERENCES = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")
_EXPECTED_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


def references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCES.findall(html)]


@pytest.mark.parametrize(
    ("page", "must_load"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
async def test_docs_page_references_only_local_assets(
    client: httpx.AsyncClient, page: str, must_load: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    refs = references(html)
    assert any(ref.endswith(must_load) for ref in refs), refs
    assert "/openapi.json" in refs
    for ref in refs:
        assert re.match(r"/[^/]", ref), f"{ref} is not a local URL"
        asset = await client.get(ref)
        assert asset.status_code == 200, ref
        suffix = ref[ref.rfind(".") :]
        content_type = asset.headers["content-type"].split(";")[0]
        assert content_type in _EXPECTED_TYPES[suffix], (ref, content_type)
        assert len(asset.content) > 1000, ref


async def test_redoc_page_points_at_the_schema(client: httpx.AsyncClient) -> None:
    html = (await client.get("/redoc")).text
    assert '<redoc spec-url="/openapi.json">' in html
    assert "fonts.googleapis" not in html


async def test_swagger_ui_bundle_is_the_real_library(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    (bundle,) = [ref for ref in references(html) if ref.endswith("swagger-ui-bundle.js")]
    script = (await client.get(bundle)).text
    assert "SwaggerUIBundle" in script
    assert "persistAuthorization" in script  # Swagger UI 4+ understands the option we set


async def test_swagger_ui_keeps_the_api_key_and_offers_it(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    assert '"persistAuthorization": true' in html
    assert '"validatorUrl": null' in html  # no call to the public validator
    schema = (await client.get("/openapi.json")).json()
    api_key = schema["components"]["securitySchemes"]["ApiKey"]
    assert {k: api_key[k] for k in ("type", "in", "name")} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert {"ApiKey": []} in schema["paths"]["/v1/detect"]["post"]["security"]
    assert not any(path in schema["paths"] for path in ("/docs", "/redoc", "/metrics"))
