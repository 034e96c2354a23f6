"""The SQLite driver alone: CPU and wall time per transaction, and calls on the connection's
thread, with db/sqlite_driver.py's one call per statement (the default) and SQLAlchemy's
aiosqlite adapter as shipped (FACESVC_SQLITE_ONE_HOP=false), in turns, one process.

    .venv/bin/python bench/sqlite_driver.py [--transactions 2000] [--rounds 3]
        [--out bench/results/sqlite_driver.json]

Transactions, each through the service's engine and ``session_scope`` on a temporary file:
"read" (a verification's: one user's faces, a SELECT with a join), "write" (an attempt count:
the upsert with RETURNING), "batch" (a group commit of 8 audit-like inserts). CPU = the
process's (every thread: the event loop and the connection threads) over the transactions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from core_latency import machine_info
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import create_engine, create_sessionmaker, session_scope
from facesvc.db.migrate import upgrade
from facesvc.repositories.attempts import LoginAttemptRepository
from facesvc.repositories.faces import FaceRepository

Transaction = Callable[[async_sessionmaker[AsyncSession]], Awaitable[Any]]


def transactions() -> dict[str, Transaction]:
    tenant, user = uuid.uuid4(), uuid.uuid4()

    async def read(sessionmaker: async_sessionmaker[AsyncSession]) -> Any:
        async with session_scope(sessionmaker) as session:
            return await FaceRepository(session, None).tenant_user_embeddings(  # type: ignore[arg-type]
                tenant, user, "facenet-int8"
            )

    async def write(sessionmaker: async_sessionmaker[AsyncSession]) -> Any:
        async with session_scope(sessionmaker) as session:
            return await LoginAttemptRepository(session).begin_attempt(
                tenant, user, datetime.now(UTC)
            )

    async def batch(sessionmaker: async_sessionmaker[AsyncSession]) -> Any:
        async with session_scope(sessionmaker) as session:
            for _ in range(8):
                await session.execute(
                    text("INSERT INTO bench_log (note) VALUES (:note)"), {"note": "x" * 64}
                )

    return {"read": read, "write": write, "batch": batch}


async def measure(url: str, one_hop: bool, count: int) -> dict[str, Any]:
    engine = create_engine(url, one_hop=one_hop)
    sessionmaker = create_sessionmaker(engine)
    calls: Counter[str] = Counter()
    run = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls[getattr(fn, "__name__", "?")] += 1
        return await run(self, fn, *args, **kwargs)

    out: dict[str, Any] = {}
    try:
        for name, transaction in transactions().items():
            for _ in range(100):  # warm: pooled connections, statement caches
                await transaction(sessionmaker)
            calls.clear()
            aiosqlite.Connection._execute = counting  # type: ignore[method-assign]
            await transaction(sessionmaker)
            aiosqlite.Connection._execute = run  # type: ignore[method-assign]
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(count):
                await transaction(sessionmaker)
            out[name] = {
                "cpu_us": round(1e6 * (time.process_time() - cpu) / count, 1),
                "wall_us": round(1e6 * (time.perf_counter() - wall) / count, 1),
                "calls_on_connection_thread": sum(calls.values()),
            }
    finally:
        aiosqlite.Connection._execute = run  # type: ignore[method-assign]
        await engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sqlite_driver.json"))
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="facesvc-driver-") as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        upgrade(url)

        async def table() -> None:
            engine = create_engine(url)
            async with session_scope(create_sessionmaker(engine)) as session:
                await session.execute(text("CREATE TABLE bench_log (id INTEGER PRIMARY KEY, note)"))
            await engine.dispose()

        asyncio.run(table())
        for number in range(args.rounds):
            row = {}
            for label, one_hop in (("one call per statement", True), ("aiosqlite adapter", False)):
                row[label] = asyncio.run(measure(url, one_hop, args.transactions))
                print(f"round {number + 1}, {label}: {json.dumps(row[label])}", flush=True)
            rounds.append(row)
    ours, theirs = "one call per statement", "aiosqlite adapter"
    ratios = {
        name: [round(r[ours][name]["cpu_us"] / r[theirs][name]["cpu_us"], 2) for r in rounds]
        for name in ("read", "write", "batch")
    }
    print("CPU per transaction, one call per statement / adapter, per round:", ratios)
    payload = {
        "benchmark": "sqlite_driver",
        "machine": machine_info(),
        "transactions_per_measure": args.transactions,
        "rounds": rounds,
        "cpu_ratio_one_hop_over_adapter": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
