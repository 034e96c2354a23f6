"""FaceNet throughput: the raw model at batch 1/8/32 vs the service's runner (micro-batching)
fed by 1/8/32 concurrent single-face requests, in one run on one machine.

    .venv/bin/python bench/model_throughput.py [--seconds 8] [--out PATH]

Target (issue 5): the runner keeps >= 90% of the raw model's batched throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from core_latency import machine_info

from facesvc.inference.batching import ArrayBatching, BatchPolicy
from facesvc.inference.embedders.facenet import FaceNetEmbedder, TFLiteFaceNetEmbedder
from facesvc.inference.runner import ModelRunner
from facesvc.settings import Settings


def crops(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(n, 160, 160, 3), dtype=np.uint8)


def raw_throughput(model: Any, batch: int, seconds: float) -> float:
    data = crops(batch)
    model.predict(data)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(data)
        done += batch
    return done / (time.perf_counter() - start)


async def runner_throughput(
    runner: ModelRunner[np.ndarray, np.ndarray], concurrency: int, seconds: float
) -> tuple[float, float]:
    one = crops(1)
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await runner.run(one)
            done += 1

    start = time.perf_counter()
    calls_before = runner.calls
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    calls = max(runner.calls - calls_before, 1)
    return done / elapsed, done / calls


async def measure(
    name: str, factory: Callable[[], Any], seconds: float
) -> list[dict[str, float | int | str]]:
    runner: ModelRunner[np.ndarray, np.ndarray] = ModelRunner(
        name, "/CPU:0", ArrayBatching(), BatchPolicy(max_batch=32, max_queue=1024)
    )
    await runner.start(factory, crops(1))
    model = runner.model
    rows: list[dict[str, float | int | str]] = []
    for batch in (1, 8, 32):
        # raw: the model called directly, no executor, no batching
        raw = raw_throughput(model, batch, seconds)  # type: ignore[arg-type]
        served, mean_batch = await runner_throughput(runner, batch, seconds)
        rows.append(
            {
                "model": name,
                "batch_or_concurrency": batch,
                "raw_faces_per_s": round(raw, 1),
                "runner_faces_per_s": round(served, 1),
                "runner_mean_batch": round(mean_batch, 1),
                "runner_vs_raw": round(served / raw, 3),
            }
        )
        print(
            f"{name:15} batch/concurrency {batch:>2}: raw {raw:6.1f} faces/s, runner "
            f"{served:6.1f} faces/s (mean batch {mean_batch:.1f}) = {served / raw:.0%} of raw",
            flush=True,
        )
    await runner.aclose()
    runner.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_throughput.json"))
    args = parser.parse_args()
    models = Settings().models_dir
    threads = os.cpu_count() or 1
    rows = await measure(
        "facenet (TF graph)", lambda: FaceNetEmbedder(models / "facenet_128.pb"), args.seconds
    )
    rows += await measure(
        "facenet-tflite",
        lambda: TFLiteFaceNetEmbedder(models / "facenet_128.tflite", threads=threads),
        args.seconds,
    )
    result = {
        "benchmark": "model_throughput",
        "machine": machine_info(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
