"""Sustained mixed load on a real ``facesvc serve``: enrol, verify and identify at concurrency 32.

    .venv/bin/python bench/load_mixed.py [--minutes 10] [--concurrency 32] [--out PATH]

Starts the server as the e2e tests do (temporary SQLite file, 127.0.0.1), enrols a gallery,
then keeps ``--concurrency`` requests in flight for ``--minutes``: enrolments of more photos
of gallery people, verifications (genuine and impostor) and identifications (known and
unknown people), drawn at random by ``--mix``. Reports the HTTP statuses per operation
(5xx must be 0; 503 ``overloaded`` is load shedding and counted apart), client-side
p50/p95/p99 latency, and the server's resident memory at the start, every 10 s and at the
end. Writes JSON (default bench/results/load_mixed.json); exits 1 if any request got a 5xx
other than 503 overloaded, or no answer at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from core_latency import lfw_people, machine_info

from facesvc.settings import Settings

# Shared with the e2e tests, so kept with them in tests/support/ (not in the package); this
# script runs as `python bench/<name>.py`, so the repository root goes on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.procfs import process_tree_rss_kib
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ("enrol", "verify", "identify")
OVERLOADED = "/problems/overloaded"
RSS_EVERY_S = 10.0


@dataclass
class OperationStats:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def record(self, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies_s.append(seconds)

    def summary(self, wall_s: float) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s or [0.0]) * 1000.0
        return {
            "requests": len(self.latencies_s),
            "requests_per_s": round(len(self.latencies_s) / wall_s, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "mean_ms": round(float(ms.mean()), 1),
            "max_ms": round(float(ms.max()), 1),
            "status_counts": dict(sorted(self.statuses.items())),
        }


@dataclass
class Workload:
    """Photos in memory and the gallery's user ids, drawn from at random."""

    rng: random.Random
    enrolled: dict[str, str]  # person -> user id
    extra_photos: dict[str, list[bytes]]  # gallery people's photos for enrolling / genuine
    strangers: list[bytes]  # photos of people not in the gallery

    def request(self, operation: str) -> tuple[str, bytes]:
        person = self.rng.choice(sorted(self.enrolled))
        user_id = self.enrolled[person]
        own = self.rng.choice(self.extra_photos[person])
        if operation == "enrol":
            return f"/v1/users/{user_id}/faces", own
        probe = own if self.rng.random() < 0.5 else self.rng.choice(self.strangers)
        if operation == "verify":
            return f"/v1/users/{user_id}/verify", probe
        return "/v1/identify?top_k=5", probe


def status_key(response: httpx.Response) -> str:
    if response.status_code == 503:
        try:
            kind = response.json().get("type")
        except ValueError:
            kind = None
        return "503-overloaded" if kind == OVERLOADED else "503"
    return str(response.status_code)


async def worker(
    client: httpx.AsyncClient,
    workload: Workload,
    weights: list[float],
    deadline: float,
    stats: dict[str, OperationStats],
) -> None:
    while time.monotonic() < deadline:
        operation = workload.rng.choices(OPERATIONS, weights)[0]
        url, photo = workload.request(operation)
        start = time.perf_counter()
        try:
            response = await client.post(
                url, files={"image": ("p.jpg", photo, "image/jpeg")}, data={"consent": "true"}
            )
        except httpx.TransportError as exc:
            stats[operation].record(f"error:{type(exc).__name__}", time.perf_counter() - start)
            continue
        stats[operation].record(status_key(response), time.perf_counter() - start)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def sample_rss(pid: int, samples: list[tuple[float, float]], started: float) -> None:
    while True:
        rss = process_tree_rss_kib(pid)
        if rss is not None:
            samples.append((round(time.monotonic() - started, 1), round(rss / 1024, 1)))
        await asyncio.sleep(RSS_EVERY_S)


async def run_load(
    base_url: str,
    pid: int,
    workload: Workload,
    args: argparse.Namespace,
    headers: dict[str, str],
) -> tuple[dict[str, OperationStats], float, list[tuple[float, float]]]:
    weights = [float(w) for w in args.mix.split(":")]
    stats = {op: OperationStats() for op in OPERATIONS}
    samples: list[tuple[float, float]] = []
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=base_url, timeout=120, limits=limits, headers=headers
    ) as client:
        started = time.monotonic()
        deadline = started + args.minutes * 60
        sampler = asyncio.create_task(sample_rss(pid, samples, started))
        await asyncio.gather(
            *(worker(client, workload, weights, deadline, stats) for _ in range(args.concurrency))
        )
        wall_s = time.monotonic() - started
        sampler.cancel()
    return stats, wall_s, samples


def prepare(server: ServerProcess, lfw: Path, gallery_size: int, seed: int) -> tuple[Workload, int]:
    """Create the gallery (2 photos each, off the clock); the faces it holds."""
    rng = random.Random(seed)
    people = lfw_people(lfw)
    candidates = sorted(name for name, files in people.items() if len(files) >= 6)
    gallery = rng.sample(candidates, gallery_size)
    others = [f for name, files in people.items() if name not in gallery for f in files[:1]]
    strangers = [p.read_bytes() for p in rng.sample(others, 200)]
    enrolled: dict[str, str] = {}
    extra: dict[str, list[bytes]] = {}
    faces = 0
    with httpx.Client(base_url=server.base_url, timeout=120, headers=server.headers) as client:
        for name in gallery:
            created = client.post("/v1/users", json={"name": name.replace("_", " ")})
            created.raise_for_status()
            enrolled[name] = str(created.json()["id"])
            for path in people[name][:2]:
                response = client.post(
                    f"/v1/users/{enrolled[name]}/faces",
                    files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                    data={"consent": "true"},
                )
                faces += response.status_code == 201
            extra[name] = [p.read_bytes() for p in people[name][2:12]]
    return Workload(rng, enrolled, extra, strangers), faces


def print_report(result: dict[str, Any]) -> None:
    print(
        f"\n{'operation':9} {'n':>6} {'req/s':>6} {'p50':>7} {'p95':>7} {'p99':>7}  statuses (ms)"
    )
    for name, s in result["operations"].items():
        print(
            f"{name:9} {s['requests']:6d} {s['requests_per_s']:6.1f} {s['p50_ms']:7.0f} "
            f"{s['p95_ms']:7.0f} {s['p99_ms']:7.0f}  {s['status_counts']}"
        )
    totals, rss = result["totals"], result["server"]
    print(
        f"\n5xx: {totals['server_errors_5xx']}, 503 overloaded: {totals['overloaded_503']}, "
        f"no answer: {totals['transport_errors']}; "
        f"RSS start {rss['rss_start_mib']} MiB -> end {rss['rss_end_mib']} MiB "
        f"(peak {rss['peak_rss_mib']} MiB)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mix", default="1:2:2", help="enrol:verify:identify weights")
    parser.add_argument("--gallery", type=int, default=20, help="people enrolled at the start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the server log here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_mixed.json")
    args = parser.parse_args(argv)

    lfw = Path(os.environ.get("FACESVC_DATA_DIR", Settings().data_dir)) / "lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        parser.error(f"LFW not found at {lfw} (set FACESVC_DATA_DIR)")
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="facesvc-load-") as tmp:
        server = ServerProcess(
            f"sqlite+aiosqlite:///{Path(tmp) / 'facesvc.db'}",
            Path(tmp),
            # The mix verifies strangers against enrolled users on purpose (half the probes):
            # with the lockout on it would measure 429s, not the service under load.
            env={"FACESVC_LOG_LEVEL": "warning", "FACESVC_LOCKOUT_MAX_FAILURES": "1000000"},
            workers=args.workers,  # default: as `make run` starts it, a worker per core
        )
        with server:
            workload, faces = prepare(server, lfw, args.gallery, args.seed)
            rss_start = process_tree_rss_kib(server.pid)
            print(f"server pid {server.pid}: {faces} faces enrolled; {args.minutes} min of load")
            stats, wall_s, samples = asyncio.run(
                run_load(server.base_url, server.pid, workload, args, server.headers)
            )
            rss_end = process_tree_rss_kib(server.pid)
            # the largest sampled resident memory of the server and its workers
            peak = max((mib for _, mib in samples), default=0.0) * 1024
            stored = json.loads(server.get("/readyz")[1])
        exit_code = server.stop()
        log_text = server.stderr_path.read_text(errors="replace")
        tracebacks = log_text.count("Traceback")
        if args.keep_log is not None:
            args.keep_log.write_text(log_text, encoding="utf-8")

    statuses: Counter[str] = Counter()
    for s in stats.values():
        statuses.update(s.statuses)
    server_errors = sum(n for k, n in statuses.items() if k[:1] == "5" and k != "503-overloaded")
    transport_errors = sum(n for k, n in statuses.items() if k.startswith("error:"))
    result: dict[str, Any] = {
        "benchmark": "load_mixed",
        "machine": machine,
        "config": {
            "minutes": args.minutes,
            "concurrency": args.concurrency,
            "mix_enrol_verify_identify": args.mix,
            "gallery_people": args.gallery,
            "gallery_faces_at_start": faces,
            "seed": args.seed,
            "device": Settings().device,
            "database": "sqlite (temporary file), one uvicorn process",
            "client": "httpx.AsyncClient on the same machine, client-side latency",
        },
        "wall_s": round(wall_s, 1),
        "operations": {op: s.summary(wall_s) for op, s in stats.items()},
        "totals": {
            "requests": sum(statuses.values()),
            "status_counts": dict(sorted(statuses.items())),
            "server_errors_5xx": server_errors,
            "overloaded_503": statuses.get("503-overloaded", 0),
            "transport_errors": transport_errors,
        },
        "server": {
            "rss_start_mib": round(rss_start / 1024, 1) if rss_start else None,
            "rss_end_mib": round(rss_end / 1024, 1) if rss_end else None,
            "peak_rss_mib": round(peak / 1024, 1) if peak else None,
            "rss_samples_s_mib": samples,
            "models": [m["name"] for m in stored.get("models", [])],
            "exit_code_on_sigterm": exit_code,
            "tracebacks_in_stderr": tracebacks,
        },
    }
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 1 if server_errors or transport_errors else 0


if __name__ == "__main__":
    sys.exit(main())
