"""Request ids, the JSON access log and Prometheus /metrics, through the real app."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from facesvc.app import create_app
from facesvc.observability.logs import JsonFormatter, RequestIdFilter
from facesvc.observability.metrics import ServiceMetrics
from facesvc.settings import Settings
from tests.support.data import image_file, lfw_image

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


async def test_a_valid_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    request_id = "req-2024.05_abc"
    response = await client.get("/livez", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id


async def test_a_request_id_is_generated_when_missing(client: httpx.AsyncClient) -> None:
    first = (await client.get("/livez")).headers["X-Request-ID"]
    second = (await client.get("/livez")).headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "bad_id", ["has space", "x" * 129, "a/b", 'quote"d', "new\\nline", "ünïcode"]
)
async def test_an_invalid_request_id_is_replaced(client: httpx.AsyncClient, bad_id: str) -> None:
    response = await client.get("/livez", headers={"X-Request-ID": bad_id.encode("utf-8")})
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


async def test_the_longest_valid_request_id_is_kept(client: httpx.AsyncClient) -> None:
    request_id = "A-z.0_" * 21 + "xy"  # 128 characters
    response = await client.get("/livez", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id


async def test_error_responses_carry_the_request_id_header(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": "r404"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "r404"
    assert "request_id" not in response.json()  # only 5xx bodies name it


class JsonLines(logging.Handler):
    """The lines the service's stderr handler would write, kept in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())  # as in logging_config: runs when the record is made
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def entries(self, logger: str, request_id: str) -> list[dict[str, object]]:
        parsed = [json.loads(line) for line in self.lines]
        return [e for e in parsed if e["logger"] == logger and e.get("request_id") == request_id]


@pytest.fixture
def json_log(caplog: pytest.LogCaptureFixture) -> Iterator[JsonLines]:
    caplog.set_level(logging.INFO)  # caplog restores the levels afterwards
    handler = JsonLines()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def access_line(log: JsonLines, request_id: str) -> tuple[str, dict[str, object]]:
    (entry,) = log.entries("facesvc.access", request_id)
    (line,) = [line for line in log.lines if json.loads(line) == entry]
    return line, entry


async def test_one_json_access_line_per_request_without_the_image(
    client: httpx.AsyncClient, json_log: JsonLines
) -> None:
    image = lfw_image("Colin_Powell", 1)
    request_id = f"log-{uuid.uuid4().hex}"
    response = await client.post(
        "/v1/detect", files=image_file(image), headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200, response.text

    line, entry = access_line(json_log, request_id)
    assert "\n" not in line
    assert entry["logger"] == "facesvc.access"
    assert entry["level"] == "info"
    assert entry["method"] == "POST"
    assert entry["route"] == "/v1/detect"
    assert entry["status"] == 200
    assert entry["request_id"] == request_id
    assert entry["client_ip"] == "127.0.0.1"  # httpx's ASGI transport's client address
    assert isinstance(entry["duration_ms"], float)
    assert 0 < entry["duration_ms"] < 60_000
    assert set(entry) == {
        "time", "level", "logger", "message",
        "method", "route", "status", "duration_ms", "request_id", "client_ip",
    }  # fmt: skip
    # Nothing of the upload: no bytes, no file name, no embedding-sized payload.
    assert len(line) < 500
    assert "face.jpg" not in line
    assert "JFIF" not in line
    assert "\\xff\\xd8" not in line


async def test_the_access_log_names_the_route_template_not_the_path(
    client: httpx.AsyncClient, json_log: JsonLines
) -> None:
    user_id = uuid.uuid4()
    response = await client.get(f"/v1/users/{user_id}", headers={"X-Request-ID": "tmpl-1"})
    assert response.status_code == 404
    line, entry = access_line(json_log, "tmpl-1")
    assert entry["route"] == "/v1/users/{user_id}"
    assert entry["status"] == 404
    assert str(user_id) not in line


def test_records_made_during_a_request_carry_its_id() -> None:
    record = logging.LogRecord(
        "facesvc.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    assert RequestIdFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello you"
    assert "request_id" not in entry  # outside a request there is none


def test_the_serve_logging_setup_writes_json_lines_to_stderr() -> None:
    # A separate interpreter: dictConfig replaces the root handlers pytest relies on.
    script = (
        "import logging\n"
        "from facesvc.observability.logs import configure_logging\n"
        "from facesvc.observability.request_id import bind_request_id\n"
        "configure_logging('warning')\n"
        "logging.getLogger('facesvc.test').info('hidden: below the level')\n"
        "bind_request_id('abc-123')\n"
        "extra = {'port': 8000, 'color_message': 'ansi'}\n"
        "logging.getLogger('uvicorn.error').warning('from %s', 'uvicorn', extra=extra)\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('facesvc').exception('boom')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["message"] for line in lines] == ["from uvicorn", "boom"]
    assert lines[0]["logger"] == "uvicorn.error"
    assert lines[0]["level"] == "warning"
    assert lines[0]["port"] == 8000
    assert "color_message" not in lines[0]  # uvicorn's ANSI copy of the message is dropped
    assert all(line["request_id"] == "abc-123" for line in lines)
    assert "ZeroDivisionError" in lines[1]["exception"]


@pytest.fixture
async def failing_client() -> AsyncIterator[httpx.AsyncClient]:
    """An app (no lifespan, no models) with one route that fails unexpectedly."""
    app: FastAPI = create_app(Settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://facesvc.test") as c:
        yield c


async def test_a_500_problem_names_the_request_id(
    failing_client: httpx.AsyncClient, json_log: JsonLines
) -> None:
    response = await failing_client.get("/boom", headers={"X-Request-ID": "err-500"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "/problems/internal-error"
    assert body["request_id"] == "err-500"
    assert response.headers["X-Request-ID"] == "err-500"
    _, entry = access_line(json_log, "err-500")
    assert entry["status"] == 500
    assert entry["route"] == "/boom"
    # the error handler's own line, with its traceback, is tied to the same request
    (error,) = json_log.entries("facesvc.api.problems", "err-500")
    assert "RuntimeError: unexpected" in str(error["exception"])


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, sorted(k for k in found if k[0] == name)
    return found[key]


async def test_metrics_count_requests_and_model_calls(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    before = samples((await client.get("/metrics")).text)
    for number in (1, 2):
        response = await client.post(
            "/v1/detect", files=image_file(lfw_image("Colin_Powell", number))
        )
        assert response.status_code == 200
    assert (await client.get(f"/v1/users/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/no/such/route")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)

    detect = {"method": "POST", "route": "/v1/detect", "status": "200"}
    old = before.get(("facesvc_http_requests_total", frozenset(detect.items())), 0.0)
    assert value(found, "facesvc_http_requests_total", **detect) == old + 2
    assert value(found, "facesvc_http_request_duration_seconds_count", **detect) == old + 2
    assert value(found, "facesvc_http_request_duration_seconds_sum", **detect) > 0
    assert value(found, "facesvc_http_request_duration_seconds_bucket", le="+Inf", **detect) >= 2
    assert (
        value(
            found,
            "facesvc_http_requests_total",
            method="GET",
            route="/v1/users/{user_id}",
            status="404",
        )
        >= 1
    )
    assert (
        value(found, "facesvc_http_requests_total", method="GET", route="<unmatched>", status="404")
        >= 1
    )

    # model calls, observed on the model threads: detector once per image, mesh per face
    registry = app.state.facesvc.registry  # the models FACESVC_CPU_RUNTIME chose here
    det, mesh, emb = (
        s.name for s in (registry.detector_spec, registry.mesh_spec, registry.embedder_spec)
    )
    detector = value(found, "facesvc_model_inference_seconds_count", model=det)
    assert detector >= 2 + before.get(
        ("facesvc_model_inference_seconds_count", frozenset({("model", det)})), 0.0
    )
    assert value(found, "facesvc_model_inference_seconds_sum", model=det) > 0
    assert value(found, "facesvc_model_batch_size_sum", model=det) >= detector
    assert value(found, "facesvc_model_batch_size_count", model=mesh) >= 2
    assert value(found, "facesvc_models_ready") == 1.0
    for model in (det, mesh, emb):
        assert value(found, "facesvc_model_queue_items", model=model) >= 0
    state = app.state.facesvc
    if state.gallery.size() is None:  # pgvector: the worker holds no gallery, no gauge
        assert not [k for k in found if k[0] == "facesvc_gallery_size"]
    else:
        assert value(found, "facesvc_gallery_size") == state.gallery.size()

    # CPU: each model's own (its thread's), never more than the whole process's
    cpu = {m: value(found, "facesvc_model_cpu_seconds_total", model=m) for m in (det, mesh)}
    assert all(seconds > 0 for seconds in cpu.values()), cpu
    assert sum(cpu.values()) < value(found, "process_cpu_seconds_total")
    assert value(found, "facesvc_model_items_total", model=det) >= detector
    runner = state.registry.detector
    assert runner.cpu_seconds == pytest.approx(cpu[det])
    # which model runs where
    for info in state.registry.info():
        assert (
            value(
                found,
                "facesvc_model_info",
                model=info.name,
                task=info.task,
                device=info.device,
                runtime=info.runtime,
            )
            == 1
        )


async def test_metrics_are_not_in_the_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


def test_each_app_has_its_own_registry_and_a_gallery_gauge_on_demand() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()  # no duplicate-registration error
    first.observe_request("GET", "/livez", 200, 0.01)
    assert (
        "facesvc_http_requests_total",
        frozenset({("method", "GET"), ("route", "/livez"), ("status", "200")}),
    ) in samples(first.exposition().decode())
    assert not any(
        name == "facesvc_http_requests_total" for name, _ in samples(second.exposition().decode())
    )

    gallery = ["a", "b", "c"]
    second.set_gallery_size_provider(lambda: len(gallery))
    assert value(samples(second.exposition().decode()), "facesvc_gallery_size") == 3
    gallery.append("d")
    assert value(samples(second.exposition().decode()), "facesvc_gallery_size") == 4
    assert value(samples(second.exposition().decode()), "facesvc_models_ready") == 0
