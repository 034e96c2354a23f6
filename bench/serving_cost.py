"""Where a request's CPU goes: server CPU per request, split into model work and the rest,
for detect, embed, verify, identify and enrol, beside the seed tutorial's naive server on
the same models — all in one run.

    .venv/bin/python bench/serving_cost.py [--seconds 10] [--out bench/results/serving_cost.json]

facesvc runs as one worker with one thread per model, so its /metrics see all of it: the
model work is each runner's thread CPU time (facesvc_model_cpu_seconds_total), the server
CPU is utime + stime of the process from /proc/<pid>/stat; "other" is the difference
(HTTP, multipart, auth, database, audit, encryption, image decoding, hand-offs). The naive
server (bench/naive_server.py: one thread, one call per model per request, no database)
runs the same models with one thread each too, through the same runner class, whose model
CPU it reports the same way (GET /model_cpu). Requests are
sent one at a time (concurrency 1): the cost of one request, not of a crowd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from core_latency import machine_info
from http_load import enrol_gallery, people, wait_port

from facesvc.settings import PROJECT_ROOT

# Shared with the e2e tests, so kept with them in tests/support/ (not in the package); this
# script runs as `python bench/<name>.py`, so the repository root goes on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.procfs import process_tree_cpu_seconds
from tests.support.server_process import ServerProcess, free_port

ROUTES = ("detect", "embed", "verify", "identify", "enrol")
# One thread per model in both servers: the model CPU is then what the models' threads use.
SAME_MODELS = {"FACESVC_INFERENCE_THREADS": "1", "FACESVC_LOG_LEVEL": "warning"}


def model_cpu_from_metrics(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("facesvc_model_cpu_seconds_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def measure(
    send: Callable[[int], Awaitable[int]],
    seconds: float,
    server_cpu: Callable[[], float],
    model_cpu: Callable[[], Awaitable[float]],
) -> dict[str, Any]:
    for i in range(10):  # warm-up
        await send(i)
    cpu0, model0 = server_cpu(), await model_cpu()
    start, count, statuses = time.perf_counter(), 0, set()
    latencies = []
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        statuses.add(await send(count))
        latencies.append(time.perf_counter() - began)
        count += 1
    elapsed = time.perf_counter() - start
    cpu1, model1 = server_cpu(), await model_cpu()
    total = (cpu1 - cpu0) * 1000 / count
    model = (model1 - model0) * 1000 / count
    latencies.sort()
    return {
        "requests": count,
        "statuses": sorted(statuses),
        "per_second": round(count / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "server_cpu_ms": round(total, 2),
        "model_cpu_ms": round(model, 2),
        "other_cpu_ms": round(total - model, 2),
    }


async def bench_facesvc(server: ServerProcess, seconds: float) -> dict[str, Any]:
    gallery = people(10)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=60, headers=server.headers
    ) as client:
        users = await enrol_gallery(client, gallery)
        probes = [(u, p) for u, (_, ps) in zip(users, gallery, strict=True) for p in ps[2:]]
        enrol_user = (await client.post("/v1/users", json={"name": "bench"})).json()["id"]

        async def model_cpu() -> float:
            return model_cpu_from_metrics((await client.get("/metrics")).text)

        def probe(i: int) -> tuple[str, bytes]:
            return probes[i % len(probes)]

        async def post(path: str, photo: bytes, **kw: Any) -> int:
            return (await client.post(path, files={"image": photo}, **kw)).status_code

        sends: dict[str, Callable[[int], Awaitable[int]]] = {
            "detect": lambda i: post("/v1/detect", probe(i)[1]),
            "embed": lambda i: post("/v1/embed", probe(i)[1]),
            "verify": lambda i: post(f"/v1/users/{probe(i)[0]}/verify", probe(i)[1]),
            "identify": lambda i: post("/v1/identify", probe(i)[1]),
            "enrol": lambda i: post(
                f"/v1/users/{enrol_user}/faces", probe(i)[1], data={"consent": "true"}
            ),
        }
        results = {}
        for route in ROUTES:
            results[route] = await measure(
                sends[route], seconds, lambda: process_tree_cpu_seconds(server.pid), model_cpu
            )
            print("facesvc", route, json.dumps(results[route]), flush=True)
        return results


async def bench_naive(port: int, pid: int, seconds: float) -> dict[str, Any]:
    gallery = people(10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for name, photos in gallery:
            await client.post("/face_register", params={"name": name}, content=photos[0])
        probes = [(n, p) for n, ps in gallery for p in ps[2:]]

        async def login(i: int) -> int:
            name, photo = probes[i % len(probes)]
            r = await client.post("/face_login", params={"name": name}, content=photo)
            return r.status_code

        async def model_cpu() -> float:  # its runners' thread CPU, as facesvc's /metrics
            return float((await client.get("/model_cpu")).json()["seconds"])

        result = await measure(login, seconds, lambda: process_tree_cpu_seconds(pid), model_cpu)
        print("naive verify", json.dumps(result), flush=True)
        return {"verify": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving_cost.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="facesvc-bench-") as tmp:
        env = {**SAME_MODELS, "FACESVC_LOCKOUT_MAX_FAILURES": "1000000"}
        with ServerProcess(
            f"sqlite+aiosqlite:///{tmp}/cost.db", Path(tmp) / "log", env=env, workers=1
        ) as server:
            results["facesvc"] = asyncio.run(bench_facesvc(server, args.seconds))
        port = free_port()
        naive = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "bench" / "naive_server.py"), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **SAME_MODELS},
        )
        try:
            wait_port(port, naive)
            results["naive"] = asyncio.run(bench_naive(port, naive.pid, args.seconds))
        finally:
            naive.terminate()
            naive.wait(15)
    ratio = (
        results["facesvc"]["verify"]["server_cpu_ms"] / results["naive"]["verify"]["server_cpu_ms"]
    )
    print(f"\n{'route':10} {'server CPU ms':>14} {'model':>8} {'other':>8} {'req/s':>7}")
    for label, runs in (("facesvc", results["facesvc"]), ("naive", results["naive"])):
        for route, row in runs.items():
            print(
                f"{label + ' ' + route:18} {row['server_cpu_ms']:>6} {row['model_cpu_ms']:>8} "
                f"{row['other_cpu_ms']:>8} {row['per_second']:>7}"
            )
    print(f"server CPU per verify, facesvc / naive: {ratio:.2f}x")
    payload = {
        "benchmark": "serving_cost",
        "machine": machine_info(),
        "seconds_per_route": args.seconds,
        "concurrency": 1,
        "threads_per_model": 1,
        "results": results,
        "verify_cpu_ratio_facesvc_over_naive": round(ratio, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
