"""/demo: a page to try the service in a browser (left out of the OpenAPI schema).

Plain HTML, CSS and JavaScript shipped in the package (``facesvc/static/demo``), no CDN and
no build step. The page calls the public /v1 routes like any other client; its URLs are
relative, so it works behind a proxy that mounts the service under a path.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from facesvc.errors import PathNotFoundError

router = APIRouter(include_in_schema=False)

# Only these files are served; anything else under /demo/ is a 404.
ASSETS = {
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}
# Everything the page loads comes from this origin; no inline script, no third party.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


def demo_dir() -> Path:
    return Path(str(files("facesvc").joinpath("static", "demo")))


@router.get("/demo")
async def demo_page() -> FileResponse:
    return FileResponse(
        demo_dir() / "index.html",
        media_type="text/html; charset=utf-8",
        headers={**HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


@router.get("/demo/{name}")
async def demo_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise PathNotFoundError(f"no demo asset {name!r}")
    return FileResponse(demo_dir() / name, media_type=media_type, headers=HEADERS)
