"""Start-up time and resident memory per model: each manifest model loaded alone, in a fresh
process, the way the service's runner loads it.

    .venv/bin/python bench/model_footprint.py [--calls 30] [--out PATH.json]

For every model whose weights are present (``make models``), a child process records:
seconds and resident memory (VmRSS) after importing TensorFlow and facesvc (the floor every
model shares), seconds to load the model (verify its sha256, read, build the interpreter or
graph), the first call (warm-up), then the median of ``--calls`` single-item calls on a real
LFW photo (a 250x250 image for a detector, one face for the mesh, one 160x160 crop for an
embedder) and the peak resident memory (VmHWM) after them. The service's own start-up
(``/livez``, ``/readyz``) is measured by core_latency.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core_latency import machine_info

from facesvc.settings import Settings

# Shared with the e2e tests, so kept with them in tests/support/ (not in the package); this
# script runs as `python bench/<name>.py`, so the repository root goes on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.procfs import proc_status_kib


def mib(field: str) -> float:
    return round((proc_status_kib(os.getpid(), field) or 0) / 1024, 1)


def child(name: str, calls: int) -> dict[str, Any]:
    start = time.perf_counter()
    import numpy as np

    from facesvc.inference.devices import configure_tensorflow
    from facesvc.inference.images import decode_image
    from facesvc.inference.manifest import Manifest
    from facesvc.inference.registry import model_factory
    from facesvc.inference.types import Box, Detection

    settings = Settings(dev_mode=True)
    configure_tensorflow(settings.device, settings.inference_threads)
    imported_s, floor_mib = time.perf_counter() - start, mib("VmRSS")
    spec = Manifest.load(settings.manifest_path).models[name]
    photo = sorted((settings.data_dir / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))[0]
    image = decode_image(photo.read_bytes(), max_pixels=settings.max_image_pixels)
    item: Any
    if spec.task == "detector":
        item = [image]
    elif spec.task == "mesh":
        item = [(image, Detection(box=Box(68, 68, 114, 114), score=1.0))]
    else:
        item = np.ascontiguousarray(image[45:205, 45:205][None])
    started = time.perf_counter()
    model = model_factory(spec, settings)()
    load_s = time.perf_counter() - started
    loaded_mib = mib("VmRSS")
    started = time.perf_counter()
    model.predict(item)
    first_call_s = time.perf_counter() - started
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict(item)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "model": name,
        "task": spec.task,
        "file": spec.file,
        "import_s": round(imported_s, 2),
        "load_s": round(load_s, 3),
        "first_call_s": round(first_call_s, 3),
        "median_call_ms": round(float(np.median(times)), 2),
        "rss_after_import_mib": floor_mib,
        "rss_after_load_mib": loaded_mib,
        "model_load_mib": round(loaded_mib - floor_mib, 1),
        "peak_rss_after_calls_mib": mib("VmHWM"),
    }


def present(settings: Settings) -> list[str]:
    from facesvc.inference.manifest import Manifest

    names = []
    for name, spec in Manifest.load(settings.manifest_path).models.items():
        path = spec.path(settings.models_dir)
        if path is None or path.exists():  # None: weights inside a Python package (mtcnn)
            names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_footprint.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.calls)))
        return
    machine = machine_info()
    rows = []
    for name in present(Settings(dev_mode=True)):
        done = subprocess.run(  # one fresh process per model: nothing shared, nothing cached
            [sys.executable, __file__, "--child", name, "--calls", str(args.calls)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        if done.returncode != 0:
            rows.append({"model": name, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{name:18} load {row['load_s']:6.3f} s  first call {row['first_call_s']:6.3f} s  "
            f"call {row['median_call_ms']:7.2f} ms  +{row['model_load_mib']:6.1f} MiB  "
            f"peak {row['peak_rss_after_calls_mib']:7.1f} MiB",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "model_footprint", "machine": machine, "results": rows}
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
