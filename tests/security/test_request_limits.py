"""The request body limit: refused by Content-Length before reading, and chunked bodies
counted as they stream, in process and on a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from facesvc.api.limits import request_body_limit
from facesvc.settings import Settings
from tests.support.api import assert_problem
from tests.support.data import image_file, lfw_image
from tests.support.server_process import ServerProcess
from tests.support.servers import http_client, serving

CHUNK = 256 * 1024
MULTIPART = "multipart/form-data; boundary=facesvc-test-boundary"


class CountingBody:
    """A multipart body streamed in chunks (so sent chunked), counting what was pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    def _parts(self) -> Iterator[bytes]:
        yield (
            b"--facesvc-test-boundary\r\n"
            b'Content-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
        )
        while self.sent < self.total:
            yield b"\x00" * CHUNK
        yield b"\r\n--facesvc-test-boundary--\r\n"

    def sync(self) -> Iterator[bytes]:
        for part in self._parts():
            self.sent += len(part)
            yield part

    async def stream(self) -> AsyncIterator[bytes]:
        for part in self.sync():
            yield part


def test_default_limit_leaves_room_for_two_uploads() -> None:
    settings = Settings(_env_file=None)
    assert settings.max_request_bytes is None
    assert request_body_limit(settings) > 2 * settings.max_upload_bytes
    assert request_body_limit(settings) < 2 * settings.max_upload_bytes + 1024 * 1024
    assert request_body_limit(Settings(_env_file=None, max_request_bytes=5000)) == 5000


async def test_declared_length_over_limit_is_refused_unread(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limit = request_body_limit(settings)
    body = CountingBody(64 * 1024)
    response = await client.post(
        "/v1/detect",
        content=body.stream(),
        headers={"content-type": MULTIPART, "content-length": str(limit + 1)},
    )
    problem = assert_problem(response, 413, "request-too-large")
    assert problem["limit"] == limit
    assert body.sent == 0, "the body was read although its declared length was over the limit"


async def test_chunked_body_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limit = request_body_limit(settings)
    body = CountingBody(3 * limit)  # no Content-Length: counted as it streams
    response = await client.post(
        "/v1/detect", content=body.stream(), headers={"content-type": MULTIPART}
    )
    assert_problem(response, 413, "request-too-large")
    assert limit < body.sent <= limit + 2 * CHUNK, "reading went on past the limit"


async def test_compare_accepts_two_uploads_of_the_largest_size(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    # Two files of max_upload_bytes each fit: refused for what they are (not images), not
    # for their size.
    filler = b"not an image " * (settings.max_upload_bytes // 13)
    response = await client.post(
        "/v1/compare",
        files={
            "image_a": ("a.jpg", filler, "image/jpeg"),
            "image_b": ("b.jpg", filler, "image/jpeg"),
        },
    )
    assert_problem(response, 415, "unsupported-image-type")


async def test_upload_over_the_per_file_limit_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    big = b"\xff\xd8\xff" + b"\x00" * settings.max_upload_bytes
    assert_problem(await client.post("/v1/detect", files=image_file(big)), 413, "payload-too-large")


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server with a 1 MiB body limit; it answers 413 without its models loaded."""
    with serving(
        tmp_path_factory.mktemp("limits-server"),
        env={"FACESVC_MAX_REQUEST_BYTES": str(1024 * 1024), "FACESVC_LOG_LEVEL": "warning"},
        wait="live",
        timeout=120,
    ) as server:
        yield server


@pytest.mark.e2e
def test_real_server_cuts_off_a_chunked_upload(small_limit_server: ServerProcess) -> None:
    limit = 1024 * 1024
    with http_client(small_limit_server) as http:
        body = CountingBody(32 * limit)
        response = http.post("/v1/detect", content=body.sync(), headers={"content-type": MULTIPART})
        assert_problem(response, 413, "request-too-large")
        assert response.json()["limit"] == limit

        declared = http.post(
            "/v1/detect",
            content=b"x" * (limit + 1),
            headers={"content-type": MULTIPART},
        )
        assert_problem(declared, 413, "request-too-large")

        # The same connection still serves requests, and the server is alive.
        assert http.get("/livez").status_code == 200
        small = http.post("/v1/detect", files=image_file(lfw_image("Colin_Powell", 1)))
        assert small.status_code in (200, 503), small.text  # 503 while models load
    assert small_limit_server.process is not None
    assert small_limit_server.process.poll() is None
    assert "Traceback" not in small_limit_server.stderr_path.read_text(errors="replace")
