"""End-to-end HTTP load: verify (and identify) latency and throughput at concurrency 1/8/32,
facesvc with micro-batching on and off, and two naive baselines built the seed tutorial's way
(one request at a time, one model call per stage): with the tutorial's frozen TF graph and
with facesvc's TFLite FaceNet — all in one run.

    .venv/bin/python bench/http_load.py [--seconds 20] [--out bench/results/http_load.json]

Each configuration is a real server process on 127.0.0.1 (facesvc via `facesvc serve`, the
baseline via bench/naive_server.py), fed LFW photos by an asyncio client. Targets (issue 5,
2-core CPU): verify p50 <= 50 ms at concurrency 1; at concurrency 32 >= 4x the naive baseline
and >= 35 verifications/s.
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
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from core_latency import machine_info

from facesvc.settings import PROJECT_ROOT, Settings
from facesvc.testing import ServerProcess, free_port, proc_status_kib

LFW = Settings().data_dir / "lfw" / "lfw-deepfunneled"


def people(n: int) -> list[tuple[str, list[bytes]]]:
    """n LFW people with >= 6 photos: 2 to enrol, the rest to probe."""
    chosen = []
    for folder in sorted(LFW.iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 6:
            chosen.append((folder.name, [p.read_bytes() for p in photos[:6]]))
        if len(chosen) == n:
            return chosen
    raise RuntimeError("not enough LFW people")


async def drive(
    send: Any, probes: list[Any], concurrency: int, seconds: float
) -> dict[str, float | int]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < stop:
            probe = probes[counter % len(probes)]
            counter += 1
            start = time.perf_counter()
            try:
                status = await send(probe)
            except httpx.TransportError:  # refused or reset: the naive server's backlog is 5
                status = 0
            latencies.append((time.perf_counter() - start) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "ok": statuses.get(200, 0),
        "statuses": {
            ("connection error" if k == 0 else str(k)): v for k, v in sorted(statuses.items())
        },
        "rps": round(statuses.get(200, 0) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


async def bench_facesvc(
    base: str,
    gallery: list[tuple[str, list[bytes]]],
    seconds: float,
    levels: list[int],
    headers: dict[str, str],
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=limits, headers=headers
    ) as client:
        users = []
        for name, photos in gallery:
            user = (await client.post("/v1/users", json={"name": name})).json()
            for photo in photos[:2]:
                await client.post(
                    f"/v1/users/{user['id']}/faces",
                    files={"image": photo},
                    data={"consent": "true"},
                )
            users.append(user["id"])
        probes = [
            (uid, photo)
            for uid, (_, photos) in zip(users, gallery, strict=True)
            for photo in photos[2:]
        ]

        async def verify(probe: tuple[str, bytes]) -> int:
            uid, photo = probe
            r = await client.post(f"/v1/users/{uid}/verify", files={"image": photo})
            return r.status_code

        async def identify(probe: tuple[str, bytes]) -> int:
            r = await client.post("/v1/identify", files={"image": probe[1]})
            return r.status_code

        await drive(verify, probes, 2, 3)  # warm-up
        return {
            "verify": [await drive(verify, probes, c, seconds) for c in levels],
            "identify": [await drive(identify, probes, c, seconds) for c in levels],
        }


async def bench_naive(
    base: str, gallery: list[tuple[str, list[bytes]]], seconds: float, levels: list[int]
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        for name, photos in gallery:
            await client.post("/face_register", params={"name": name}, content=photos[0])
        probes = [(name, photo) for name, photos in gallery for photo in photos[2:]]

        async def login(probe: tuple[str, bytes]) -> int:
            r = await client.post("/face_login", params={"name": probe[0]}, content=probe[1])
            return r.status_code

        await drive(login, probes, 2, 3)
        return {"verify": [await drive(login, probes, c, seconds) for c in levels]}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("naive server exited")
        try:
            httpx.post(f"http://127.0.0.1:{port}/nothing", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError("naive server did not start")


# Both serve one request at a time with one model call per stage. The first is the seed
# tutorial's stack (FaceNet as a frozen TensorFlow graph); the second runs facesvc's faster
# TFLite FaceNet, so facesvc's lead over it is the serving design alone.
NAIVE_BASELINES = (
    ("naive (tutorial: TF frozen graph)", {"FACESVC_EMBEDDER": "facenet"}),
    ("naive (same TFLite models)", {}),
)


def run_naive(
    gallery: list[tuple[str, list[bytes]]], args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    port = free_port()
    naive = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "bench" / "naive_server.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    try:
        wait_port(port, naive)
        return asyncio.run(
            bench_naive(f"http://127.0.0.1:{port}", gallery, args.seconds, args.levels)
        )
    finally:
        naive.terminate()
        naive.wait(15)


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """facesvc's verifications/s over each baseline's, level by level (same run)."""
    out = {}
    for label, _ in NAIVE_BASELINES:
        for ours, theirs in zip(
            results["facesvc (batching on)"]["verify"], results[label]["verify"], strict=True
        ):
            key = f"facesvc (batching on) / {label} @ concurrency {ours['concurrency']}"
            out[key] = round(ours["rps"] / max(theirs["rps"], 1e-9), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/http_load.json"))
    args = parser.parse_args()
    gallery = people(args.people)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="facesvc-bench-") as tmp:
        for label, batch in (
            ("facesvc (batching on)", str(Settings().batch_max_size)),  # the default
            ("facesvc (batches of up to 32)", "32"),
            ("facesvc (batching off)", "1"),
        ):
            db = f"sqlite+aiosqlite:///{tmp}/{batch}.db"
            env = {"FACESVC_BATCH_MAX_SIZE": batch, "FACESVC_LOG_LEVEL": "warning"}
            with ServerProcess(db, Path(tmp) / f"log-{batch}", env=env) as server:
                results[label] = asyncio.run(
                    bench_facesvc(
                        server.base_url, gallery, args.seconds, args.levels, server.headers
                    )
                )
                results[label]["batch_max_size"] = int(batch)
                results[label]["peak_rss_mib"] = round(
                    (proc_status_kib(server.pid, "VmHWM") or 0) / 1024
                )
            print(label, json.dumps(results[label]["verify"]), flush=True)
        for label, env in NAIVE_BASELINES:
            results[label] = run_naive(gallery, args, env)
            print(label, json.dumps(results[label]["verify"]), flush=True)

    summary = []
    for label, runs in results.items():
        for row in runs["verify"]:
            summary.append((label, row["concurrency"], row["p50_ms"], row["p99_ms"], row["rps"]))
    print(f"\n{'server':36} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'verify/s':>9}")
    for label, conc, p50, p99, rps in summary:
        print(f"{label:36} {conc:>4} {p50:>8} {p99:>8} {rps:>9}")
    payload = {
        "benchmark": "http_load",
        "machine": machine_info(),
        "seconds_per_level": args.seconds,
        "results": results,
        "throughput_ratios": ratios(results),
    }
    for key, value in payload["throughput_ratios"].items():
        print(f"{key}: {value}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
