"""Swagger UI and ReDoc served offline: their assets come from an installed package.

The ``fastapi-offline`` wheel ships ``swagger-ui-dist`` 5 and ReDoc 2 bundles as package data;
we use only those files (not its app factory) and serve them under ``/static/docs``, so /docs
and /redoc work with no internet and reference no CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/static/docs"

SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "persistAuthorization": True,  # the X-API-Key survives a reload of /docs
    "displayRequestDuration": True,
    "validatorUrl": None,  # the default would call validator.swagger.io
}


def docs_assets_dir() -> Path:
    path = Path(str(files("fastapi_offline").joinpath("static")))
    if not (path / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI assets not found in {path}: reinstall fastapi-offline")
    return path


def install_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve /docs and /redoc from local assets (create the app with docs_url=None and
    redoc_url=None so FastAPI's CDN pages are not registered)."""
    app.mount(STATIC_URL, StaticFiles(directory=docs_assets_dir()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    def prefix(request: Request) -> str:
        # Behind a proxy that mounts the service under a path, assets live under it too.
        return str(request.scope.get("root_path", "")) + STATIC_URL

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        static = prefix(request)
        return get_swagger_ui_html(
            openapi_url=str(request.scope.get("root_path", "")) + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        static = prefix(request)
        return get_redoc_html(
            openapi_url=str(request.scope.get("root_path", "")) + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{static}/redoc.standalone.js",
            redoc_favicon_url=f"{static}/favicon.png",
            with_google_fonts=False,
        )
