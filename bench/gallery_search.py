"""1:N search time and memory of the in-memory gallery at 1e4, 1e5, 1e6 templates.

    .venv/bin/python bench/gallery_search.py [--sizes 10000 100000 1000000] [--queries 200]
        [--backends exact ivf hnsw] [--out bench/results/gallery_search.json]

Synthetic L2-normalised 128-d templates (random: the hardest case for ANN, no clusters), 2 per
user; queries are noisy copies of enrolled templates (cosine about 0.87 to their source) so
recall@1 against the true user is meaningful. Each backend runs through GalleryIndex, as the
service searches: exact (matrix product), ivf (FAISS IVF-Flat, nprobe 64) and hnsw (FAISS
HNSW; its 1e6 build takes about 15 minutes on 2 cores, so it is not in the defaults).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the service sets it (facesvc/__init__)

import argparse
import json
import resource
import time
import uuid
from pathlib import Path

import numpy as np
from core_latency import machine_info

from facesvc.gallery.ann import ANNIndex, HNSWIndex, IVFIndex
from facesvc.gallery.index import GalleryIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def measure(
    size: int, queries: int, rng: np.random.Generator, backend: str
) -> dict[str, float | int]:
    users = [uuid.uuid4() for _ in range(size // 2)]
    user_of = [users[i // 2] for i in range(size)]
    faces = [uuid.uuid4() for _ in range(size)]
    vectors = unit(rng.normal(size=(size, 128)).astype(np.float32))
    ann: ANNIndex | None = (
        {"hnsw": HNSWIndex, "ivf": IVFIndex}[backend](128) if backend != "exact" else None
    )
    index = GalleryIndex("bench", ann=ann, ann_min_size=0)
    start = time.perf_counter()
    index.replace(faces, user_of, vectors, version=1)
    build = time.perf_counter() - start
    rows = rng.integers(0, size, queries)
    probes = unit(vectors[rows] + rng.normal(scale=0.05, size=(queries, 128)).astype(np.float32))
    index.search(probes[0], 5)  # warm-up
    times, correct = [], 0
    for row, probe in zip(rows, probes, strict=True):
        t = time.perf_counter()
        hits = index.search(probe, 5)
        times.append((time.perf_counter() - t) * 1000)
        correct += hits[0].user_id == user_of[row]
    ms = np.array(times)
    return {
        "templates": size,
        "users": len(users),
        "build_s": round(build, 3),
        "matrix_mib": round(vectors.nbytes / 2**20, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "recall_at_1": correct / queries,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--backends", nargs="+", default=["exact", "ivf"], choices=["exact", "ivf", "hnsw"]
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/gallery_search.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print(
        f"{'backend':>8} {'templates':>10} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'recall@1':>9} {'matrix MiB':>11}"
    )
    for size in args.sizes:
        for backend in args.backends:
            row = measure(size, args.queries, rng, backend)
            rows.append({"backend": backend, **row})
            print(
                f"{backend:>8} {size:>10} {row['build_s']:>8} {row['p50_ms']:>8} "
                f"{row['p99_ms']:>8} {row['recall_at_1']:>9} "
                f"{row['matrix_mib']:>11}"
            )
    result = {
        "benchmark": "gallery_search",
        "machine": machine_info(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
