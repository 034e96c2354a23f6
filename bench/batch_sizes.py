"""The batch sizes each model actually gets in service (issue 24), from the server's own
``facesvc_model_batch_size`` histogram: facesvc as `make run` starts it (one worker per usable
core, micro-batching on), verify and identify driven at each concurrency in turn.

    .venv/bin/python bench/batch_sizes.py [--levels 1 8 16] [--seconds 15]
        [--out bench/results/batch_sizes.json]

Per level and request kind: requests/s, p50/p95, server CPU per request, and per model the
calls, items, mean batch and the share of calls of 1 / 2 / 3-4 / 5-8 / 9+ items
(histogram deltas from /metrics, summed over the workers: each keeps its own registry, so
``scrape_all`` opens connections until every worker has answered one scrape, told apart by
the pid /readyz reports on the same connection).
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
from core_latency import machine_info
from http_load import drive, enrol_senders, people

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.server_process import ServerProcess

BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, 10**9))  # as the histogram's le buckets


def histogram(text: str) -> dict[str, dict[float, float]]:
    """``{model: {le: cumulative count}}`` of facesvc_model_batch_size, plus its _sum under
    le -1 (the number of items) from one scrape."""
    out: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if not line.startswith("facesvc_model_batch_size"):
            continue
        name = line.split('model="', 1)[1].split('"', 1)[0]
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("facesvc_model_batch_size_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.setdefault(name, {})[float("inf") if le == "+Inf" else float(le)] = value
        elif line.startswith("facesvc_model_batch_size_sum"):
            out.setdefault(name, {})[-1.0] = value
    return out


async def scrape_all(client: httpx.AsyncClient, workers: int) -> dict[str, dict[float, float]]:
    """Every worker's histogram summed. Each worker has its own registry and a connection is
    served by whichever worker accepted it, so new connections are opened until ``workers``
    different ones answered: on each, /readyz says which worker (its pid), then /metrics on the
    same connection."""
    seen: dict[int, dict[str, dict[float, float]]] = {}
    for _ in range(400):
        async with httpx.AsyncClient(
            base_url=str(client.base_url),
            headers=client.headers,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ) as one:
            pid = int((await one.get("/readyz")).json()["worker"]["pid"])
            if pid not in seen:
                seen[pid] = histogram((await one.get("/metrics")).text)
        if len(seen) >= workers:
            break
    if len(seen) < workers:
        raise RuntimeError(f"only {len(seen)} of {workers} workers answered a scrape")
    total: dict[str, dict[float, float]] = {}
    for per_worker in seen.values():
        for name, buckets in per_worker.items():
            for le, value in buckets.items():
                total.setdefault(name, {})[le] = total.get(name, {}).get(le, 0.0) + value
    return total


def _calls_up_to(cumulative: dict[float, float], size: int) -> float:
    """Calls of at most ``size`` items, from the histogram's cumulative buckets."""
    eligible = [le for le in sorted(cumulative) if le <= size]
    return cumulative[eligible[-1]] if eligible else 0.0


def shares(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, buckets in after.items():
        old = before.get(name, {})
        calls = buckets.get(float("inf"), 0.0) - old.get(float("inf"), 0.0)
        items = buckets.get(-1.0, 0.0) - old.get(-1.0, 0.0)
        if calls <= 0:
            continue
        cumulative = {le: buckets[le] - old.get(le, 0.0) for le in buckets if le >= 0}
        ranges = {}
        for low, high in BUCKETS:
            n = _calls_up_to(cumulative, high) - _calls_up_to(cumulative, low - 1)
            ranges[f"{low}-{high}" if high < 10**9 else f"{low}+"] = round(n / calls, 3)
        result[name] = {
            "calls": int(calls),
            "items": int(items),
            "mean_batch": round(items / calls, 2),
            "share_of_calls": ranges,
        }
    return result


async def run(server: ServerProcess, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    gallery = people(20)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=60, headers=server.headers, limits=limits
    ) as client:
        senders = await enrol_senders(client, gallery)
        verify, identify, probes = senders.verify, senders.identify, senders.probes

        rows = []
        for kind, send in (("verify", verify), ("identify", identify)):
            await drive(send, probes, 2, 1)  # warm-up
            for level in args.levels:
                before = await scrape_all(client, workers)
                row = await drive(send, probes, level, args.seconds, server.pid)
                row["models"] = shares(before, await scrape_all(client, workers))
                row.update(kind=kind, concurrency=level)
                rows.append(row)
                embed: dict[str, Any] = next(
                    (v for k, v in row["models"].items() if "facenet" in k), {}
                )
                print(
                    f"{kind:8} c{level:<3} {row['rps']:6.1f}/s  embedder mean batch "
                    f"{embed.get('mean_batch')} {embed.get('share_of_calls')}",
                    flush=True,
                )
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2, help="as `facesvc serve` picks")
    parser.add_argument("--out", type=Path, default=Path("bench/results/batch_sizes.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/facesvc.db"
        env = {"FACESVC_LOG_LEVEL": "warning", "FACESVC_LOCKOUT_MAX_FAILURES": "1000000"}
        server = ServerProcess(url, Path(folder), env=env, workers=None)
        server.migrate()
        with server:
            result = asyncio.run(run(server, args, args.workers))
    config: dict[str, Any] = {**vars(args), "out": str(args.out)}
    payload: dict[str, Any] = {"benchmark": "batch_sizes", "machine": machine_info()}
    payload["config"] = config
    payload.update(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
