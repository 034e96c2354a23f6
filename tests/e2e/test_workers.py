"""Several worker processes on one database agree on the 1:N gallery.

Each worker has its own in-memory index; a change made through one worker reaches the
others through the gallery version row, so identify never misses a committed enrolment
nor returns a deleted user, whichever worker answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from facesvc.testing import ServerProcess
from tests.conftest import lfw_image, require_data
from tests.pg import postgres_server  # noqa: F401  (fixture)
from tests.servers import http_client, serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two workers on SQLite, and on PostgreSQL (the database for several workers)."""
    require_data()
    url = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres_server")
        url = pg.url_for(pg.create_database())
    with serving(
        tmp_path_factory.mktemp("workers"), args=["--workers", "2"], database_url=url
    ) as server:
        yield server


def test_enrol_and_delete_reach_every_worker(two_workers: ServerProcess) -> None:
    # fresh connections per request so the kernel spreads them over both workers
    def post(path: str, **kwargs: object) -> httpx.Response:
        with http_client(two_workers) as c:
            return c.post(path, **kwargs)  # type: ignore[arg-type]

    user = post("/v1/users", json={"name": "Junichiro Koizumi"}).json()
    for number in (1, 2):
        r = post(
            f"/v1/users/{user['id']}/faces",
            files={"image": lfw_image("Junichiro_Koizumi", number)},
            data={"consent": "true"},
        )
        assert r.status_code == 201, r.text
    for number in range(3, 11):
        r = post("/v1/identify", files={"image": lfw_image("Junichiro_Koizumi", number)})
        assert r.status_code == 200, r.text
        assert r.json()["match"] == user["id"], f"photo {number}: {r.json()}"
    with http_client(two_workers) as c:
        assert c.delete(f"/v1/users/{user['id']}").status_code == 204
    for number in range(3, 9):
        r = post("/v1/identify", files={"image": lfw_image("Junichiro_Koizumi", number)})
        assert user["id"] not in [c["user_id"] for c in r.json()["candidates"]]
