"""Does batching pay for the detector? BlazeFace (fixed 192x192 input) per image at batch 1, 2,
4 and 8, one thread (the service's split with a worker per core), the default detector's file
through TFLite's interpreter as the service loads it.

    .venv/bin/python bench/detector_batch.py [--seconds 3] [--out bench/results/detector_batch.json]

The batch sizes are called in strict rotation, ``--seconds`` each per round, 3 rounds; the
median ms per image per size is reported with the cost of resizing the interpreter between two
sizes (what a batched detector would pay when consecutive batches differ). Issue 24 asked to
measure it before batching detection: if a batch of 8 is not >= 1.1x cheaper per image than a
batch of 1, detection stays one image per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from core_latency import machine_info

from facesvc.inference.manifest import Manifest
from facesvc.inference.runtimes import cpu_family
from facesvc.inference.runtimes.tflite import TFLiteModel
from facesvc.settings import Settings

SIZES = (1, 2, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/detector_batch.json"))
    args = parser.parse_args()
    settings = Settings()
    manifest = Manifest.load(settings.manifest_path)
    spec = manifest.get(settings.detector, "detector")
    path = settings.models_dir / spec.file
    model = TFLiteModel(path, threads=1)
    rng = np.random.default_rng(0)
    one = rng.uniform(-1, 1, model.input_shape).astype(np.float32)
    per_image: dict[int, list[float]] = {size: [] for size in SIZES}
    for _ in range(args.rounds):
        for size in SIZES:
            model.resize_batch(size)
            tensor = np.concatenate([one] * size)
            for _ in range(5):
                model(tensor)
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                model(tensor)
                calls += 1
            per_image[size].append((time.perf_counter() - start) * 1000 / calls / size)
    resize_ms = []
    for n in range(20):
        start = time.perf_counter()
        model.resize_batch(1 + n % 2)
        resize_ms.append((time.perf_counter() - start) * 1000)
    medians = {size: round(statistics.median(values), 3) for size, values in per_image.items()}
    speedup = round(medians[1] / medians[max(SIZES)], 2)
    verdict = "batch detection" if speedup >= 1.1 else "keep one image per call"
    payload = {
        "benchmark": "detector_batch",
        "machine": machine_info(),
        "cpu_family": cpu_family(),
        "model": spec.name,
        "file": spec.file,
        "input_shape": list(model.input_shape),
        "threads": 1,
        "ms_per_image_median": {str(k): v for k, v in medians.items()},
        "ms_per_image_rounds": {str(k): [round(v, 3) for v in vs] for k, vs in per_image.items()},
        "resize_between_sizes_ms_median": round(statistics.median(resize_ms), 3),
        f"batch 1 / batch {max(SIZES)} per image": speedup,
        "verdict": verdict,
    }
    for size, value in medians.items():
        print(f"batch {size}: {value} ms per image")
    print(f"speed-up at batch {max(SIZES)}: {speedup}x -> {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
