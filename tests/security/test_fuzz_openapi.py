"""Fuzz every operation of the OpenAPI schema against a real server: no 5xx, ever.

Schemathesis draws each request from the schema (parameters, JSON bodies, multipart fields);
image fields get its sample files, random bytes and a few real LFW photos, so the model path
is fuzzed too. Half of the ``user_id`` / ``face_id`` draws are swapped for a real user and
face, so the routes get past "not found". Bounded: ``MAX_EXAMPLES`` per operation. The
server is the session's shared one (``live_server``); every request sends its API key.

The one answer in the 5xx range that is allowed is 503 ``overloaded`` / ``models-loading``:
shedding load is not a server error. Each failure prints a curl reproducer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.core.file_samples import FILE_SAMPLES
from schemathesis.transport.serialization import Binary

from facesvc.app import create_app
from facesvc.settings import Settings
from tests.support.data import LFW, lfw_image
from tests.support.server_process import ServerProcess
from tests.support.servers import http_client

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 25
SHED_LOAD = {"/problems/overloaded", "/problems/models-loading"}
# People no other test on the shared server enrols or looks for: fuzzed enrolments of their
# photos must not become another test's best match.
PHOTOS = (("Donald_Rumsfeld", 1), ("George_W_Bush", 2))


def _photos() -> list[bytes]:
    if not LFW.is_dir():
        return []
    return [lfw_image(name, number) for name, number in PHOTOS]


# Image fields: schemathesis' own samples (PNG, JPEG, GIF, WebP, PDF, ZIP), random bytes and
# real photos of one face each.
schemathesis.openapi.format(
    "binary",
    st.one_of(
        st.sampled_from([*FILE_SAMPLES.values(), *_photos()]),
        st.binary(max_size=4096),
    ).map(Binary),
)

# The schema as the server serves it (same code), built without starting anything.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@dataclass
class Gallery:
    """One real user with one real face, re-created when a fuzzed DELETE removed them."""

    http: httpx.Client
    user_id: str = ""
    face_id: str = ""

    def ensure(self) -> None:
        if self.user_id and self.http.get(f"/v1/users/{self.user_id}").status_code == 200:
            faces = self.http.get(f"/v1/users/{self.user_id}/faces").json()["items"]
            if any(f["face_id"] == self.face_id for f in faces):
                return
        else:
            created = self.http.post("/v1/users", json={"name": "Fuzz Target"})
            assert created.status_code == 201, created.text
            self.user_id = created.json()["id"]
        enrolled = self.http.post(
            f"/v1/users/{self.user_id}/faces",
            files={"image": ("face.jpg", lfw_image(*PHOTOS[0]), "image/jpeg")},
            data={"consent": "true"},
        )
        assert enrolled.status_code == 201, enrolled.text
        self.face_id = enrolled.json()["face_id"]


@pytest.fixture(scope="module")
def server(live_server: ServerProcess, data_dir: object) -> Iterator[ServerProcess]:
    """The shared server, its tenant's settings put back afterwards: the fuzzer PATCHes
    /v1/tenant too (e.g. `require_liveness: true`), which would refuse the plain verifications
    of every later test on the shared server. No traceback in its log: checked when the
    session's server stops (tests/support/servers.py)."""
    writable = schema.raw_schema["components"]["schemas"]["TenantSettingsPatch"]["properties"]
    with http_client(live_server) as http:
        before = http.get("/v1/tenant").json()
    yield live_server
    with http_client(live_server) as http:
        restored = http.patch("/v1/tenant", json={k: before[k] for k in writable})
        assert restored.status_code == 200, restored.text


@pytest.fixture(scope="module")
def gallery(server: ServerProcess) -> Iterator[Gallery]:
    with http_client(server) as http:
        yield Gallery(http)


_swap = itertools.cycle([True, False])


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any, server: ServerProcess, gallery: Gallery) -> None:
    path = case.path_parameters or {}
    if "user_id" in path and next(_swap):
        gallery.ensure()
        path["user_id"] = gallery.user_id
        if "face_id" in path:
            path["face_id"] = gallery.face_id
    response = case.call(base_url=server.base_url, headers=server.headers, timeout=60)
    if response.status_code == 503 and _problem_type(response) in SHED_LOAD:
        return
    assert response.status_code < 500, (
        f"{response.status_code} {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command(headers=server.headers, base_url=server.base_url)}"
    )


def _problem_type(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None
