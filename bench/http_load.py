"""End-to-end HTTP load: verify and identify latency, throughput and server CPU per request
at concurrency 1/8/32, for facesvc as `make run` starts it (one worker per usable core,
micro-batching on), facesvc with batching off, facesvc with one worker, facesvc loading only
the TFLite models (FACESVC_CPU_RUNTIME=tflite: what the CPU runtime's choice buys), and the
naive baseline built the seed tutorial's way (one process, one request at a time, one model
call per stage, the same models as facesvc's defaults on this CPU; --tutorial-graph adds it
on the frozen TF graph) — one run.

    .venv/bin/python bench/http_load.py [--seconds 20] [--out bench/results/http_load.json]
    # issue 24's run: group commit on (default) and off, in turns
    .venv/bin/python bench/http_load.py --configs defaults group-commit-off --levels 1 16 \
        --rounds 3 --no-identify --out bench/results/http_load_group_commit.json
    # and its balanced accept against uvicorn's, its SQLite driver against the adapter's
    .venv/bin/python bench/http_load.py --configs defaults greedy-accept --levels 1 16 \
        --rounds 3 --no-identify --out bench/results/http_load_balanced.json
    .venv/bin/python bench/http_load.py --configs defaults one-hop-off --levels 1 16 \
        --rounds 3 --no-identify --out bench/results/http_load_one_hop.json

Each configuration is a real server process on 127.0.0.1 (facesvc via `facesvc serve`, the
baseline via bench/naive_server.py), fed LFW photos by an asyncio client on the same machine
(it takes CPU too). Server CPU per request = utime + stime of the server and its workers
(/proc) over the requests served. Targets (issue 13), as ratios in this one run: CPU per
verify <= 1.3x the naive server's; best verify/s >= 1.5x the naive server's best and >= 1.5x
facesvc's own at concurrency 1; verify p50 at concurrency 1 <= the naive server's + 3 ms.
Issue 24's, on the embedded default: verify p95 at concurrency 16 <= 1.5x the queueing mean
(16 / verify per s); verify/s at 16 >= 1.6x at 1; best verify/s >= 1.0x the naive server's
best; CPU per verify <= 1.2x the naive server's.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from core_latency import machine_info

from facesvc.inference.devices import usable_cpu_count
from facesvc.settings import PROJECT_ROOT, Settings

# Shared with the e2e tests, so kept with them in tests/support/ (not in the package); this
# script runs as `python bench/<name>.py`, so the repository root goes on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.procfs import proc_status_kib, process_tree_cpu_seconds
from tests.support.server_process import ServerProcess, free_port

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


async def enrol_gallery(
    client: httpx.AsyncClient, gallery: list[tuple[str, list[bytes]]]
) -> list[str]:
    """One user per person with their first two photos enrolled; the users' ids."""
    users = []
    for name, photos in gallery:
        user = (await client.post("/v1/users", json={"name": name})).json()
        for photo in photos[:2]:
            await client.post(
                f"/v1/users/{user['id']}/faces", files={"image": photo}, data={"consent": "true"}
            )
        users.append(user["id"])
    return users


Probe = tuple[str, bytes]  # (user id, photo)


@dataclass
class Senders:
    """A gallery enrolled on one server: probes of its people's other photos, and one verify
    and one identify request per probe (each returns the status code)."""

    probes: list[Probe]
    verify: Callable[[Probe], Awaitable[int]]
    identify: Callable[[Probe], Awaitable[int]]


async def enrol_senders(
    client: httpx.AsyncClient, gallery: list[tuple[str, list[bytes]]]
) -> Senders:
    """``enrol_gallery``, then the probes (photos 3-6 of each person) and the requests."""
    users = await enrol_gallery(client, gallery)
    probes = [
        (uid, photo)
        for uid, (_, photos) in zip(users, gallery, strict=True)
        for photo in photos[2:]
    ]

    async def verify(probe: Probe) -> int:
        uid, photo = probe
        return (await client.post(f"/v1/users/{uid}/verify", files={"image": photo})).status_code

    async def identify(probe: Probe) -> int:
        return (await client.post("/v1/identify", files={"image": probe[1]})).status_code

    return Senders(probes, verify, identify)


async def drive(
    send: Any, probes: list[Any], concurrency: int, seconds: float, pid: int | None = None
) -> dict[str, Any]:
    """``concurrency`` clients in a loop for ``seconds``; with ``pid``, the server's CPU
    (process and workers, /proc) per request too."""
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

    cpu_before = process_tree_cpu_seconds(pid) if pid else 0.0
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = (process_tree_cpu_seconds(pid) - cpu_before) if pid else None
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
        "server_cpu_ms_per_request": None if cpu is None else round(cpu * 1000 / len(ms), 2),
    }


async def bench_facesvc(
    base: str,
    gallery: list[tuple[str, list[bytes]]],
    seconds: float,
    levels: list[int],
    headers: dict[str, str],
    pid: int,
    identify: bool = True,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base, timeout=60, limits=limits, headers=headers
    ) as client:
        senders = await enrol_senders(client, gallery)
        probes = senders.probes
        await drive(senders.verify, probes, 2, 3)  # warm-up
        out = {"verify": [await drive(senders.verify, probes, c, seconds, pid) for c in levels]}
        if identify:
            out["identify"] = [
                await drive(senders.identify, probes, c, seconds, pid) for c in levels
            ]
        return out


async def bench_naive(
    base: str,
    gallery: list[tuple[str, list[bytes]]],
    seconds: float,
    levels: list[int],
    pid: int,
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
        return {"verify": [await drive(login, probes, c, seconds, pid) for c in levels]}


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


# Both serve one request at a time with one call per model per stage, in one process whose
# models use every core (FACESVC_WORKERS=1). The first runs the models facesvc's defaults load
# on this CPU (its registry, FACESVC_CPU_RUNTIME included), so
# facesvc's lead over it is the serving design alone; the second (--tutorial-graph) is the
# seed tutorial's stack, FaceNet as a frozen TensorFlow graph.
NAIVE_SAME_MODELS = ("naive (same models)", {"FACESVC_WORKERS": "1"})
NAIVE_TUTORIAL = (
    "naive (tutorial: TF frozen graph)",
    {"FACESVC_WORKERS": "1", "FACESVC_EMBEDDER": "facenet"},
)
DEFAULTS = "facesvc (defaults)"


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
            bench_naive(f"http://127.0.0.1:{port}", gallery, args.seconds, args.levels, naive.pid)
        )
    finally:
        naive.terminate()
        naive.wait(15)


def ratios(
    results: dict[str, Any], label: str = DEFAULTS, naive_label: str | None = None
) -> dict[str, float]:
    """The targets of issues 13 and 24, as ratios of figures from this one run."""
    ours = results[label]["verify"]
    naive = results[naive_label or NAIVE_SAME_MODELS[0]]["verify"]
    best = max(ours, key=lambda r: r["rps"])
    naive_best = max(naive, key=lambda r: r["rps"])
    top = max(ours, key=lambda r: r["concurrency"])
    out = {
        "verify server CPU per request, facesvc / naive, concurrency 1": round(
            ours[0]["server_cpu_ms_per_request"] / naive[0]["server_cpu_ms_per_request"], 2
        ),
        "verify server CPU per request at each's best verify/s, facesvc / naive": round(
            best["server_cpu_ms_per_request"] / naive_best["server_cpu_ms_per_request"], 2
        ),
        "best verify/s, facesvc / naive": round(best["rps"] / naive_best["rps"], 2),
        "best verify/s / facesvc's own at concurrency 1": round(best["rps"] / ours[0]["rps"], 2),
        f"verify/s at concurrency {top['concurrency']} / at concurrency 1": round(
            top["rps"] / ours[0]["rps"], 2
        ),
        # a request at concurrency c waits c / throughput on average for the ones before it
        f"verify p95 at concurrency {top['concurrency']} / queueing mean (c / verify per s)": round(
            top["p95_ms"] / (1000 * top["concurrency"] / top["rps"]), 2
        ),
        "verify p50 at concurrency 1, facesvc - naive (ms)": round(
            ours[0]["p50_ms"] - naive[0]["p50_ms"], 1
        ),
    }
    if "identify" in results[label]:
        out["identify server CPU per request / naive verify's, concurrency 1"] = round(
            results[label]["identify"][0]["server_cpu_ms_per_request"]
            / naive[0]["server_cpu_ms_per_request"],
            2,
        )
    return out


# name on the command line: (label, FACESVC_BATCH_MAX_SIZE or None for the default, workers,
# extra environment)
CONFIGS: dict[str, tuple[str, str | None, int | None, dict[str, str]]] = {
    "defaults": (DEFAULTS, None, None, {}),
    # before issue 24: each verification's writes in transactions of their own
    "group-commit-off": (
        "facesvc (group commit off)",
        None,
        None,
        {"FACESVC_SQLITE_GROUP_COMMIT": "false"},
    ),
    # before issue 24's balanced accept: uvicorn's own (the first worker to wake takes every
    # connection waiting), on uvloop
    "greedy-accept": (
        "facesvc (uvicorn's accept)",
        None,
        None,
        {"FACESVC_BALANCE_CONNECTIONS": "false"},
    ),
    # SQLAlchemy's aiosqlite adapter as shipped (4-5 calls on the connection's thread per
    # statement) instead of db/sqlite_driver.py's one
    "one-hop-off": ("facesvc (aiosqlite adapter)", None, None, {"FACESVC_SQLITE_ONE_HOP": "false"}),
    "batching-off": ("facesvc (batching off)", "1", None, {}),
    "1-worker": ("facesvc (1 worker)", None, 1, {}),
    # the default, but exactly the named (TFLite) models: what FACESVC_CPU_RUNTIME's choice of
    # an OpenVINO variant buys on this CPU (the same as the default where none is preferred)
    "tflite": ("facesvc (TFLite only)", None, None, {"FACESVC_CPU_RUNTIME": "tflite"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/http_load.json"))
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(CONFIGS),
        default=["defaults", "batching-off", "1-worker", "tflite"],
        help="the facesvc configurations to run (the naive server always runs)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every configuration this many times, in turns"
    )
    parser.add_argument("--no-identify", action="store_true", help="verify only (halves the time)")
    parser.add_argument(
        "--tutorial-graph", action="store_true", help="also the naive server on the TF graph"
    )
    args = parser.parse_args()
    gallery = people(args.people)
    results: dict[str, Any] = {}
    rounds: list[dict[str, str]] = []  # per round: config label -> key in results
    with tempfile.TemporaryDirectory(prefix="facesvc-bench-") as tmp:
        for round_no in range(args.rounds):
            suffix = "" if round_no == 0 else f" #{round_no + 1}"
            keys: dict[str, str] = {}
            for name in args.configs:
                label, batch, workers, extra = CONFIGS[name]
                key = label + suffix
                # `serve` as `make run` starts it: one worker per usable core (workers=None)
                batch = batch or str(Settings().batch_max_size)
                db = f"sqlite+aiosqlite:///{tmp}/{key.replace(' ', '_').replace('#', '')}.db"
                env = {
                    **extra,
                    "FACESVC_BATCH_MAX_SIZE": batch,
                    "FACESVC_LOG_LEVEL": "warning",
                    "FACESVC_LOCKOUT_MAX_FAILURES": "1000000",  # probes of others' faces fail
                }
                log_dir = Path(tmp) / f"log-{len(results)}"
                with ServerProcess(db, log_dir, env=env, workers=workers) as server:
                    results[key] = asyncio.run(
                        bench_facesvc(
                            server.base_url,
                            gallery,
                            args.seconds,
                            args.levels,
                            server.headers,
                            server.pid,
                            identify=not args.no_identify,
                        )
                    )
                    results[key]["workers"] = workers or usable_cpu_count()
                    results[key]["batch_max_size"] = int(batch)
                    results[key]["peak_rss_mib"] = round(
                        (proc_status_kib(server.pid, "VmHWM") or 0) / 1024
                    )
                keys[label] = key
                print(key, json.dumps(results[key]["verify"]), flush=True)
            for label, env in (NAIVE_SAME_MODELS, NAIVE_TUTORIAL)[
                : 2 if args.tutorial_graph else 1
            ]:
                key = label + suffix
                results[key] = run_naive(gallery, args, env)
                keys[label] = key
                print(key, json.dumps(results[key]["verify"]), flush=True)
            rounds.append(keys)

    summary = []
    for label, runs in results.items():
        for row in runs["verify"]:
            summary.append(
                (
                    label,
                    row["concurrency"],
                    row["p50_ms"],
                    row["p95_ms"],
                    row["p99_ms"],
                    row["rps"],
                    row["server_cpu_ms_per_request"],
                )
            )
    print(
        f"\n{'server':38} {'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'verify/s':>9} {'CPU ms':>7}"
    )
    for label, conc, p50, p95, p99, rps, cpu in summary:
        print(f"{label:38} {conc:>4} {p50:>8} {p95:>8} {p99:>8} {rps:>9} {cpu:>7}")
    payload: dict[str, Any] = {
        "benchmark": "http_load",
        "machine": machine_info(),
        "seconds_per_level": args.seconds,
        "rounds": args.rounds,
        "results": results,
        "throughput_ratios": {},
    }
    for number, keys in enumerate(rounds, 1):
        for name in args.configs:
            label = CONFIGS[name][0]
            figures = ratios(results, keys[label], keys[NAIVE_SAME_MODELS[0]])
            payload["throughput_ratios"][f"round {number}: {label}"] = figures
            print(f"\nround {number}, {label}:")
            for key, value in figures.items():
                print(f"  {key}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
