"""In-service A/B of a serving choice, both servers up at once and driven in turns: by default
the CPU runtime (facesvc as `make run` starts it, FACESVC_CPU_RUNTIME=auto, which loads the
OpenVINO variants on CPUs the manifest prefers them on, against FACESVC_CPU_RUNTIME=tflite);
``--compare workers``: a worker per core against one worker whose models use every core;
``--compare batch-wait``: the default batching window (0 ms) against 3 ms; ``--compare
openvino``: the default against every model's OpenVINO variant (FACESVC_CPU_RUNTIME=openvino).

    .venv/bin/python bench/runtime_ab.py [--compare runtime|workers] [--concurrency 8]
        [--seconds 10] [--rounds 4] [--out bench/results/<compare>_ab.json]

Both servers get the same LFW gallery (20 people, 2 photos each) and the same verify probes;
each round drives one server, then the other, for ``--seconds`` at ``--concurrency``, so the
VM's drifting speed hits both alike (compare the rounds pairwise). Per round: verify/s,
server CPU per request (server and workers, /proc) and each model's CPU per item in service
(``facesvc_model_cpu_seconds_total`` / ``facesvc_model_items_total`` deltas from /metrics).
On a CPU where auto prefers nothing, the runtime comparison runs the same models twice (a null
check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from core_latency import machine_info
from http_load import Senders, drive, enrol_senders, people

# Shared with the e2e tests, so kept with them in tests/support/ (not in the package); this
# script runs as `python bench/<name>.py`, so the repository root goes on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.server_process import ServerProcess

COMMON = {"FACESVC_LOG_LEVEL": "warning", "FACESVC_LOCKOUT_MAX_FAILURES": "1000000"}
# --compare runtime (default): the CPU runtime's choice; --compare workers: `make run`'s worker
# per core (one thread per model) against one worker whose models use every core.
COMPARISONS: dict[str, dict[str, dict[str, str]]] = {
    "runtime": {"auto": {}, "tflite": {"FACESVC_CPU_RUNTIME": "tflite"}},
    "workers": {"per-core": {}, "one": {"FACESVC_WORKERS": "1"}},
    # issue 24: does a short batching window pay, given how rarely verifies coincide?
    "batch-wait": {"wait-0ms": {}, "wait-3ms": {"FACESVC_BATCH_MAX_WAIT_MS": "3"}},
    # every OpenVINO variant (FaceNet int8, BlazeFace) against the default, whatever the CPU
    # family: to re-check a family's verdict once batches grow (group commit, issue 24)
    "openvino": {"default": {}, "openvino": {"FACESVC_CPU_RUNTIME": "openvino"}},
}


def model_counters(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for line in text.splitlines():
        for metric in ("facesvc_model_cpu_seconds_total", "facesvc_model_items_total"):
            if line.startswith(metric + "{"):
                name = line.split('model="', 1)[1].split('"', 1)[0]
                out[(metric, name)] = float(line.rsplit(" ", 1)[1])
    return out


def per_item_ms(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, float]:
    result = {}
    for (metric, name), seconds in after.items():
        if metric != "facesvc_model_cpu_seconds_total":
            continue
        key = ("facesvc_model_items_total", name)
        items = after[key] - before.get(key, 0.0)
        if items:
            result[name] = round(1000 * (seconds - before.get((metric, name), 0.0)) / items, 2)
    return result


async def run(servers: dict[str, ServerProcess], args: argparse.Namespace) -> dict[str, Any]:
    gallery = people(20)
    clients: dict[str, httpx.AsyncClient] = {}
    senders: dict[str, Senders] = {}
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
    try:
        for label, server in servers.items():
            client = httpx.AsyncClient(
                base_url=server.base_url,
                timeout=60,
                headers=server.headers,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            )
            clients[label] = client
            senders[label] = await enrol_senders(client, gallery)
            rows[label].append({"models": (await client.get("/readyz")).json()["models"]})
        for round_ in range(args.rounds):
            for label, server in servers.items():
                client = clients[label]
                verify, probes = senders[label].verify, senders[label].probes
                await drive(verify, probes, 2, 1)  # warm-up
                before = model_counters((await client.get("/metrics")).text)
                row = await drive(verify, probes, args.concurrency, args.seconds, server.pid)
                row["model_cpu_ms_per_item"] = per_item_ms(
                    before, model_counters((await client.get("/metrics")).text)
                )
                row["round"] = round_
                rows[label].append(row)
                print(
                    f"round {round_} {label:7} {row['rps']:7.2f} verify/s, "
                    f"{row['server_cpu_ms_per_request']:6.2f} ms CPU/request, "
                    f"model ms/item {row['model_cpu_ms_per_item']}",
                    flush=True,
                )
    finally:
        for client in clients.values():
            await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="runtime")
    parser.add_argument(
        "--out", type=Path, default=None, help="default bench/results/<compare>_ab.json"
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(f"bench/results/{args.compare}_ab.json")
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="facesvc-ab-") as tmp:
        servers = {
            label: ServerProcess(
                f"sqlite+aiosqlite:///{tmp}/{label}.db",
                Path(tmp) / f"log-{label}",
                env={**COMMON, **env},
                workers=None,
            )
            for label, env in COMPARISONS[args.compare].items()
        }
        for server in servers.values():
            server.__enter__()
        try:
            rows = asyncio.run(run(servers, args))
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)
    summary = {}
    for label, label_rows in rows.items():
        runs = label_rows[1:]
        summary[label] = {
            "models": [m["name"] for m in label_rows[0]["models"]],
            "median_verify_per_s": float(np.median([r["rps"] for r in runs])),
            "median_server_cpu_ms_per_request": float(
                np.median([r["server_cpu_ms_per_request"] for r in runs])
            ),
        }
        print(label, json.dumps(summary[label]))
    payload = {
        "benchmark": "runtime_ab",
        "machine": machine,
        "config": vars(args) | {"out": str(args.out)},
        "summary": summary,
        "rounds": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
