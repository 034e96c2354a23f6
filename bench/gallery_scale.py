"""Identification as the gallery grows, measured from outside a real ``facesvc serve`` (issue 23).

For each backend and each N: a fresh SQLite database holding N random unit vectors (one user
each), encrypted under the data key exactly like enrolled rows (bulk insert), beside one person
really enrolled through the API with 3 LFW photos; then ``facesvc serve`` with its defaults
(one worker per core) on 127.0.0.1. Measured:

- fill: seconds to write the N rows; ready: seconds from spawn to /readyz 200, for a COLD start
  (no sealed snapshot on disk: every row read and decrypted) and, embedded, a WARM restart
  (the same server stopped and started again: the snapshot sealed on disk by the first run
  decrypted in bulk, its IVF cells with it, the run's enrolments replayed; ``warm_restart``);
  embedded: it
  searches exactly until its IVF cells are built in the background: how long that took after
  ready is recorded, and the measurements below start once they are);
- memory of the server tree (server and workers) once ready and after the load below: summed
  RSS (counts a page shared by two workers twice) and summed PSS (/proc/PID/smaps_rollup: a
  shared page split between the processes mapping it), and the gallery snapshot in /dev/shm;
- identify p50/p99 with one client (40 other photos of the enrolled person), how often the
  person is identified at the default decision, and recall@1 of the service's top candidate
  against an exact search over every stored vector (the probes' embeddings from /v1/embed);
- enrolment p50/p99 (24 LFW people, one photo each, each a new user; new connections, so
  both workers take some and the other catches up through the change log);
- identify throughput at concurrency 8;
- in-process: recall@1 of the embedded index (IVF) against exact search for 300 noisy copies of
  stored vectors (noise 0.05 per dimension, as bench/gallery_search.py), and its search time.

    python bench/gallery_scale.py                       # N = 1e3, 1e4, 1e5, 1e6, embedded
    python bench/gallery_scale.py --sizes 1000,10000 --backends embedded,exact
    python bench/gallery_scale.py --sizes 10000,100000 --backends embedded,pgvector

Results: bench/results/gallery_scale.json. ``--backends ...,pgvector`` adds the pgvector backend's
figures to the same report (measured by bench/gallery_pgvector.py on a throwaway PostgreSQL with
pgvector); another in-process backend plugs in through ``BACKENDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from facesvc.db.codec import encode_embedding
from facesvc.db.models import DEFAULT_TENANT_ID
from facesvc.inference.registry import ModelRegistry
from facesvc.inference.runtimes import cpu_flags, cpu_model, speed_flags
from facesvc.security.crypto import EmbeddingCipher, generate_data_key
from facesvc.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.procfs import process_tree
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gallery_scale.json"
LFW = Path(os.environ.get("FACESVC_DATA_DIR", Settings().data_dir)) / "lfw" / "lfw-deepfunneled"
PERSON = "Colin_Powell"  # 236 photos: 3 enrolled, 40 probes
ENROLLED, PROBES = 3, 40


@dataclass
class Run:
    """What one backend needs to serve N faces: its environment, and where the faces go."""

    env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    sqlite_path: Path | None = None


def embedded(workdir: Path) -> Run:
    db = workdir / "facesvc.db"
    return Run({"FACESVC_GALLERY_BACKEND": "embedded"}, f"sqlite+aiosqlite:///{db}", db)


def exact(workdir: Path) -> Run:
    """The per-worker index before issue 23 (a Python copy per worker, reloads on change)."""
    db = workdir / "facesvc.db"
    return Run({"FACESVC_GALLERY_BACKEND": "exact"}, f"sqlite+aiosqlite:///{db}", db)


# pgvector (issue 23 point 2) adds itself here: a Run with its PostgreSQL URL, and a fill that
# writes the vector column too (fill_sqlite below is the SQLite one).
BACKENDS: dict[str, Callable[[Path], Run]] = {"embedded": embedded, "exact": exact}


def unit_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 128), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def fill_sqlite(
    path: Path, vectors: np.ndarray, cipher: EmbeddingCipher, model: str, version: str
) -> list[uuid.UUID]:
    """N users of the default tenant with one face each, sealed as FaceRepository.add seals
    them (AES-GCM under the data key, the face id as associated data). The users' ids."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    tenant = DEFAULT_TENANT_ID.hex
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    users: list[uuid.UUID] = []
    chunk = 50_000
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk]
        user_ids = [uuid.uuid4() for _ in range(len(block))]
        face_ids = [uuid.uuid4() for _ in range(len(block))]
        users.extend(user_ids)
        connection.executemany(
            "INSERT INTO users (id, name, tenant_id, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(u.hex, f"synthetic {start + i}", tenant, now, now) for i, u in enumerate(user_ids)],
        )
        rows = []
        for face_id, user_id, vector in zip(face_ids, user_ids, block, strict=True):
            sealed, key_id = cipher.encrypt(encode_embedding(vector), face_id)
            rows.append((face_id.hex, user_id.hex, sealed, key_id, 128, model, version, now, now))
        connection.executemany(
            "INSERT INTO faces (id, user_id, embedding, key_id, embedding_dim, model_name, "
            "model_version, box_x, box_y, box_width, box_height, image_width, image_height, "
            "detection_score, created_at, consented_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 10, 10, 100, 100, 250, 250, 0.99, ?, ?)",
            rows,
        )
        connection.commit()
    connection.close()
    return users


def tree_memory(pid: int) -> dict[str, float]:
    """Summed RSS and PSS (MiB) of the server and its workers."""
    rss = pss = 0
    pids = process_tree(pid)
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
        except OSError:
            continue
    return {"processes": len(pids), "rss_mib": round(rss / 1024), "pss_mib": round(pss / 1024)}


def shm_snapshots() -> dict[str, Any]:
    folder = Path("/dev/shm") / f"facesvc-{os.getuid()}"  # noqa: S108 - only read
    files = list(folder.glob("facesvc-gallery-*.bin")) if folder.is_dir() else []
    return {"files": len(files), "mib": round(sum(f.stat().st_size for f in files) / 2**20)}


def wait_for_cells(n: int, timeout: float = 300) -> float | None:
    """Seconds after ready until the IVF snapshot exists (None below the IVF size)."""
    if n < Settings().gallery_ann_min_size:
        return None
    folder = Path("/dev/shm") / f"facesvc-{os.getuid()}"  # noqa: S108 - only read
    ready = time.perf_counter()
    while time.perf_counter() - ready < timeout:
        if list(folder.glob("facesvc-gallery-*-ivf.bin")):
            return round(time.perf_counter() - ready, 1)
        time.sleep(0.2)
    return None


def sealed_files(workdir: Path) -> dict[str, Any]:
    """The snapshot sealed on disk (FACESVC_GALLERY_CACHE_DIR: gallery-cache beside the db)."""
    files = list((workdir / "gallery-cache").glob("*.sealed"))
    return {"files": len(files), "mib": round(sum(f.stat().st_size for f in files) / 2**20)}


def gallery_log(server: ServerProcess) -> list[str]:
    """The server's own account of its start-up (build, restore and seal timings)."""
    return [
        json.loads(line)["message"]
        for line in server.stderr_path.read_text(errors="replace").splitlines()
        if line.startswith("{") and "gallery" in line and '"message"' in line
    ]


def warm_restart(server: ServerProcess, n: int) -> dict[str, Any]:
    """Stop-then-start: ready from the sealed snapshot (decrypted in bulk, IVF cells with it,
    the enrolments of the run above replayed from the change log)."""
    server.process = None  # stopped: the same database, port and folder again
    server.start()
    out: dict[str, Any] = {}
    try:
        server.wait_ready(timeout=600)
        out["ready_s"] = round(time.perf_counter() - server.started_at, 1)
        time.sleep(1)
        out["memory_ready"] = tree_memory(server.pid)
        out["shm_ready"] = shm_snapshots()
        folder = Path("/dev/shm") / f"facesvc-{os.getuid()}"  # noqa: S108 - only read
        out["ivf_at_ready"] = bool(list(folder.glob("facesvc-gallery-*-ivf.bin")))
        if n >= Settings().gallery_ann_min_size and not out["ivf_at_ready"]:
            out["ivf_cells_after_ready_s"] = wait_for_cells(n)
    finally:
        out["exit_code"] = server.stop()
    out["gallery_log"] = gallery_log(server)
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values), q)), 1) if values else float("nan")


def photos(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((LFW / name).glob("*.jpg"))]


def other_people(n: int) -> list[bytes]:
    chosen = []
    for folder in sorted(LFW.iterdir()):
        if folder.name != PERSON:
            chosen.append(sorted(folder.glob("*.jpg"))[0].read_bytes())
        if len(chosen) == n:
            break
    return chosen


async def measure_server(
    server: ServerProcess, vectors: np.ndarray, users: list[uuid.UUID], seconds: float
) -> dict[str, Any]:
    base, headers = server.base_url, server.headers
    out: dict[str, Any] = {}
    person = photos(PERSON)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        user = (await client.post("/v1/users", json={"name": PERSON})).json()["id"]
        enrolled = []
        for photo in person[:ENROLLED]:
            r = await client.post(
                f"/v1/users/{user}/faces", files={"image": photo}, data={"consent": "true"}
            )
            r.raise_for_status()
            embedded = await client.post("/v1/embed", files={"image": photo})
            enrolled.append(embedded.json()["faces"][0]["embedding"])
        enrolled_matrix = np.array(enrolled, np.float32)
        probes = person[ENROLLED : ENROLLED + PROBES]
        latencies, identified, agree = [], 0, 0
        # timed back to back first; the recall check below (an /v1/embed call and an exact
        # scan of every stored vector in this process, 512 MB at 1e6) would otherwise run
        # between two identifies and leave them the CPU's caches cold
        answers = []
        for photo in probes:
            start = time.perf_counter()
            r = await client.post("/v1/identify", files={"image": photo}, params={"top_k": 1})
            latencies.append((time.perf_counter() - start) * 1000)
            r.raise_for_status()
            answers.append(r.json())
        for photo, found in zip(probes, answers, strict=True):
            identified += found["match"] == user
            top = found["candidates"][0]["user_id"] if found["candidates"] else None
            probe = np.array(
                (await client.post("/v1/embed", files={"image": photo})).json()["faces"][0][
                    "embedding"
                ],
                np.float32,
            )
            synthetic = vectors @ probe
            best_row = int(np.argmax(synthetic))
            exact_top = (
                user
                if float((enrolled_matrix @ probe).max()) >= float(synthetic[best_row])
                else str(users[best_row])
            )
            agree += top == exact_top
        out["identify_one_client"] = {
            "requests": len(latencies),
            "p50_ms": pct(latencies, 50),
            "p99_ms": pct(latencies, 99),
            "identified": f"{identified}/{len(probes)}",
            "recall_at_1_vs_exact": round(agree / len(probes), 3),
        }
    out["memory_after_identify"] = tree_memory(server.pid)

    # enrolments on fresh connections: they land on either worker
    enrol_ms = []
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=120, limits=limits
    ) as client:
        for photo in other_people(24):
            new = (await client.post("/v1/users", json={"name": "enrolled"})).json()["id"]
            start = time.perf_counter()
            r = await client.post(
                f"/v1/users/{new}/faces", files={"image": photo}, data={"consent": "true"}
            )
            if r.status_code == 201:  # a photo the quality gate refuses is not an enrolment
                enrol_ms.append((time.perf_counter() - start) * 1000)
            await client.post("/v1/identify", files={"image": person[-1]})  # the other worker
    out["enrolment"] = {
        "requests": len(enrol_ms),
        "p50_ms": pct(enrol_ms, 50),
        "p99_ms": pct(enrol_ms, 99),
    }

    # identify throughput at concurrency 8
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=120, limits=limits
    ) as client:
        done: list[float] = []
        stop = time.perf_counter() + seconds
        counter = 0

        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < stop:
                photo = probes[counter % len(probes)]
                counter += 1
                start = time.perf_counter()
                r = await client.post("/v1/identify", files={"image": photo})
                if r.status_code == 200:
                    done.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        elapsed = time.perf_counter() - began
        out["identify_concurrency_8"] = {
            "ok": len(done),
            "rps": round(len(done) / elapsed, 2),
            "p50_ms": pct(done, 50),
            "p99_ms": pct(done, 99),
        }
    out["memory_after_load"] = tree_memory(server.pid)
    out["shm_while_running"] = shm_snapshots()
    return out


def in_process(sqlite_path: Path, cipher: EmbeddingCipher, model: str) -> dict[str, Any]:
    """The embedded index over the same database: IVF recall@1 vs exact for noisy copies of
    stored vectors, and the search time of each path (no HTTP, no model)."""
    from facesvc.gallery.bulk_read import read_sqlite
    from facesvc.gallery.lean_index import LeanIndex
    from facesvc.gallery.snapshot import Snapshot, build_snapshot

    settings = Settings()
    start = time.perf_counter()
    rows = read_sqlite(str(sqlite_path), model, 128, cipher)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    data = build_snapshot(
        rows.version,
        model,
        128,
        rows.face_ids,
        rows.user_ids,
        rows.tenant_of_row,
        rows.tenants,
        rows.vectors,
        settings.gallery_ann_min_size,
    )
    build_s = time.perf_counter() - start
    del rows
    approx = LeanIndex(
        model, ann_min_size=settings.gallery_ann_min_size, nprobe=settings.gallery_ivf_nprobe
    )
    approx.attach(Snapshot(data))
    exact_index = LeanIndex(model, ann_min_size=10**12)
    exact_index.attach(Snapshot(data))
    rng = np.random.default_rng(11)
    picked = rng.integers(0, data.count, 300)
    probes = data.vectors[picked] + rng.normal(scale=0.05, size=(300, 128)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    tenant = DEFAULT_TENANT_ID
    times: dict[str, list[float]] = {"ivf": [], "exact": []}
    agree = 0
    for probe in probes:
        t0 = time.perf_counter()
        got = approx.search(probe, 1, tenant)[0].face_id
        t1 = time.perf_counter()
        want = exact_index.search(probe, 1, tenant)[0].face_id
        t2 = time.perf_counter()
        times["ivf"].append((t1 - t0) * 1000)
        times["exact"].append((t2 - t1) * 1000)
        agree += got == want
    return {
        "read_and_decrypt_s": round(read_s, 2),
        "build_s": round(build_s, 2),
        "cells": data.cells,
        "nprobe": settings.gallery_ivf_nprobe,
        "snapshot_mib": round(data.nbytes() / 2**20),
        "uses_ivf": data.count >= settings.gallery_ann_min_size and data.cells > 1,
        "recall_at_1_noisy_copies": round(agree / len(probes), 3),
        "search_ms_p50": {k: pct(v, 50) for k, v in times.items()},
    }


def run_one(backend: str, n: int, workdir: Path, seconds: float) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    run = BACKENDS[backend](workdir)
    key = generate_data_key("bench")
    cipher = EmbeddingCipher.from_setting(key)
    spec = ModelRegistry(Settings()).embedder_spec
    server = ServerProcess(
        run.database_url, workdir, env={**run.env, "FACESVC_ENCRYPTION_KEY": key}, workers=None
    )
    server.migrate()
    vectors = unit_rows(n, seed=n)
    start = time.perf_counter()
    if run.sqlite_path is None:
        raise NotImplementedError(f"{backend}: no fill for this database yet")
    users = fill_sqlite(run.sqlite_path, vectors, cipher, spec.embedding_space, "bench")
    fill_s = time.perf_counter() - start
    result: dict[str, Any] = {"backend": backend, "faces": n, "fill_s": round(fill_s, 1)}
    server.start()
    try:
        server.wait_ready(timeout=600)
        result["ready_s"] = round(time.perf_counter() - server.started_at, 1)
        time.sleep(1)  # the workers' last start-up allocations settle
        result["memory_ready"] = tree_memory(server.pid)
        result["shm_ready"] = shm_snapshots()
        if backend == "embedded":  # the IVF cells follow the snapshot: wait for them
            result["ivf_cells_after_ready_s"] = wait_for_cells(n)
        result.update(asyncio.run(measure_server(server, vectors, users, seconds)))
        result["sealed_before_stop"] = sealed_files(workdir)
    finally:
        result["exit_code"] = server.stop()
    result["shm_after_stop"] = shm_snapshots()
    result["gallery_log"] = gallery_log(server)
    if backend == "embedded":
        result["warm_restart"] = warm_restart(server, n)
    if backend == "embedded" and run.sqlite_path is not None:
        del vectors
        result["in_process"] = in_process(run.sqlite_path, cipher, spec.embedding_space)
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def pgvector_runs(sizes: str) -> dict[str, Any]:
    """The pgvector backend at these sizes, as bench/gallery_pgvector.py measures it (a
    throwaway PostgreSQL with pgvector, fill + backfill, HNSW build and size, tenant-filtered
    identify p50/p99 and recall@1 vs exact, QPS at concurrency 8, `facesvc serve` ready and
    RSS), in this run's report."""
    out = ROOT / ".cache" / "gallery_scale_pgvector.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    wanted = [str(int(float(s))) for s in sizes.split(",")]
    script = Path(__file__).with_name("gallery_pgvector.py")
    done = subprocess.run(
        [sys.executable, str(script), "--sizes", *wanted, "--out", str(out)], check=False
    )
    if done.returncode != 0:
        return {"error": f"bench/gallery_pgvector.py exited {done.returncode}"}
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--backends", default="embedded")
    parser.add_argument("--seconds", type=float, default=10.0, help="of the concurrency-8 load")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "gallery_scale")
    parser.add_argument("--note", default="", help="conditions to record (e.g. other load)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "command": "python bench/gallery_scale.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "speed_flags": speed_flags(),
            "cpu_flags_count": len(cpu_flags()),
            "python": platform.python_version(),
        },
        "conditions": args.note,
        "load_average_at_start": list(os.getloadavg()),
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for backend in args.backends.split(","):
        if backend == "pgvector":  # PostgreSQL's own measurement: bench/gallery_pgvector.py
            report["pgvector"] = pgvector_runs(args.sizes)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            continue
        for n in (int(float(s)) for s in args.sizes.split(",")):
            began = time.perf_counter()
            print(f"{backend} N={n} ...", flush=True)
            try:
                result = run_one(backend, n, args.workdir / f"{backend}-{n}", args.seconds)
            except Exception as exc:  # recorded; the next size still runs
                result = {"backend": backend, "faces": n, "error": f"{type(exc).__name__}: {exc}"}
            result["wall_s"] = round(time.perf_counter() - began)
            result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            report["runs"].append(result)
            print(json.dumps(result), flush=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
