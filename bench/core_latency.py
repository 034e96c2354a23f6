"""Start-up time and sequential request latency of a real ``facesvc serve`` on LFW photos.

    .venv/bin/python bench/core_latency.py [--images N] [--gallery G] [--out PATH]

Starts the server exactly as the e2e tests do (``facesvc db upgrade`` on a temporary SQLite
file, then ``facesvc serve`` on a free port of 127.0.0.1), enrols a gallery, then sends N
different LFW photos one at a time (concurrency 1) to /v1/detect, /v1/embed,
/v1/users/{id}/verify and /v1/identify. Prints a table and writes JSON; see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from facesvc.inference.runtimes import cpu_model, speed_flags
from facesvc.settings import Settings

# Shared with the e2e tests, so kept with them in tests/support/ (not in the package); this
# script runs as `python bench/<name>.py`, so the repository root goes on the path first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.procfs import proc_status_kib
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
WARMUP_REQUESTS = 3  # per endpoint, not measured: first-request paths (routing, pools)


@dataclass
class EndpointStats:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s) * 1000.0
        return {
            "requests": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
            "min_ms": round(float(ms.min()), 2),
            "max_ms": round(float(ms.max()), 2),
            "requests_per_s": round(len(ms) / self.wall_s, 2),
            "status_counts": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def lfw_people(lfw: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(lfw.iterdir()) if d.is_dir()}


def choose_images(
    people: dict[str, list[Path]], gallery_size: int, probes: int, seed: int
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Gallery people (>= 4 photos, the first 2 enrolled) and N probe photos never enrolled.

    Half the probes are unenrolled photos of gallery people (identify hits, genuine verify
    attempts for the first person), half are photos of anyone else (unknowns, impostors).
    """
    rng = random.Random(seed)
    candidates = [name for name, files in people.items() if len(files) >= 4]
    gallery_names = sorted(rng.sample(candidates, gallery_size))
    gallery = {name: people[name][:2] for name in gallery_names}
    known = [f for name in gallery_names for f in people[name][2:]]
    others = [f for name, files in people.items() if name not in gallery for f in files]
    n_known = min(probes // 2, len(known))
    chosen = rng.sample(known, n_known) + rng.sample(others, probes - n_known)
    rng.shuffle(chosen)
    return gallery, chosen


def timed_post(
    client: httpx.Client, url: str, data: bytes, stats: EndpointStats | None = None
) -> httpx.Response:
    files = {"image": ("probe.jpg", data, "image/jpeg")}
    start = time.perf_counter()
    response = client.post(url, files=files, data={"consent": "true"})  # enrol needs it
    elapsed = time.perf_counter() - start
    if stats is not None:
        stats.latencies_s.append(elapsed)
        stats.statuses[response.status_code] += 1
    return response


def run_endpoint(client: httpx.Client, name: str, url: str, images: list[bytes]) -> EndpointStats:
    for data in images[:WARMUP_REQUESTS]:
        timed_post(client, url, data)
    stats = EndpointStats(name)
    start = time.perf_counter()
    for data in images:
        timed_post(client, url, data, stats)
    stats.wall_s = time.perf_counter() - start
    return stats


def enrol_gallery(
    client: httpx.Client, gallery: dict[str, list[Path]], stats: EndpointStats
) -> dict[str, tuple[str, int]]:
    """Create and enrol every gallery person; name -> (user id, faces enrolled)."""
    users = {}
    for name, files in gallery.items():
        created = client.post("/v1/users", json={"name": name.replace("_", " ")})
        created.raise_for_status()
        user_id = str(created.json()["id"])
        faces = 0
        for path in files:
            response = timed_post(client, f"/v1/users/{user_id}/faces", path.read_bytes(), stats)
            if response.status_code == 201:
                faces += 1
            else:
                print(f"  enrolment of {path.name} refused: {response.text}", file=sys.stderr)
        users[name] = (user_id, faces)
    stats.wall_s = sum(stats.latencies_s)  # enrolments only, not the user creations between
    return users


def machine_info() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_flags": speed_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": importlib.metadata.version("tensorflow"),
        "facesvc": importlib.metadata.version("facesvc"),
        # other work on the machine shows here; compare runs only at a similar load
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(result: dict[str, Any]) -> None:
    start = result["startup"]
    print(f"\nstart-up: /livez {start['livez_s']:.2f}s, /readyz {start['readyz_s']:.2f}s")
    for m in start["models"]:
        print(
            f"  {m['name']:10} {m['task']:9} load {m['load_seconds']:6.2f}s"
            f"  warm-up {m['warmup_seconds']:6.2f}s"
        )
    head = f"{'endpoint':10} {'n':>4} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8} {'req/s':>7}"
    print(f"\n{head}  statuses   (ms, concurrency 1)")
    for name, s in result["endpoints"].items():
        print(
            f"{name:10} {s['requests']:4d} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} "
            f"{s['p99_ms']:8.1f} {s['mean_ms']:8.1f} {s['requests_per_s']:7.1f}  "
            f"{s['status_counts']}"
        )
    rss = result["server"]
    print(f"\nserver peak RSS (VmHWM): {rss['peak_rss_mib']} MiB, RSS at end {rss['rss_mib']} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="probe photos per endpoint")
    parser.add_argument("--gallery", type=int, default=20, help="people enrolled for identify")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "core_latency.json"
    )
    args = parser.parse_args(argv)

    lfw = Path(os.environ.get("FACESVC_DATA_DIR", Settings().data_dir)) / "lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        parser.error(f"LFW not found at {lfw} (set FACESVC_DATA_DIR)")
    machine = machine_info()  # before the run, so the load average is the background's
    gallery, probe_paths = choose_images(lfw_people(lfw), args.gallery, args.images, args.seed)
    probes = [p.read_bytes() for p in probe_paths]  # off the clock

    with tempfile.TemporaryDirectory(prefix="facesvc-bench-") as tmp:
        # Half the verifications are strangers on purpose: with the lockout on, a user id
        # would be refused (429) after 5 of them, and the run would time refusals.
        server = ServerProcess(
            f"sqlite+aiosqlite:///{Path(tmp) / 'facesvc.db'}",
            Path(tmp),
            env={"FACESVC_LOCKOUT_MAX_FAILURES": "1000000"},
        )
        server.migrate()
        server.start()
        try:
            livez_s = server.wait_for("/livez", timeout=120)
            readyz_s = server.wait_for("/readyz", timeout=120, interval=0.1)
            ready = json.loads(server.get("/readyz")[1])
            print(f"server pid {server.pid} on {server.base_url}: ready after {readyz_s:.2f}s")

            with httpx.Client(
                base_url=server.base_url, timeout=120, headers=server.headers
            ) as client:
                enrol = EndpointStats("enrol")
                users = enrol_gallery(client, gallery, enrol)
                # verify against someone with both photos enrolled (a refused one is possible)
                verify_user, verify_faces = max(users.values(), key=lambda u: u[1])
                print(f"enrolled {len(users)} people; {len(probes)} probes per endpoint")
                endpoints = [
                    run_endpoint(client, "detect", "/v1/detect", probes),
                    run_endpoint(client, "embed", "/v1/embed", probes),
                    run_endpoint(client, "verify", f"/v1/users/{verify_user}/verify", probes),
                    run_endpoint(client, "identify", "/v1/identify", probes),
                    enrol,
                ]
            peak_kib = server.peak_rss_kib()
            rss_kib = proc_status_kib(server.pid, "VmRSS")
        finally:
            exit_code = server.stop()

    result: dict[str, Any] = {
        "benchmark": "core_latency",
        "machine": machine,
        "config": {
            "images": args.images,
            "gallery_people": len(users),
            "gallery_faces": enrol.summary()["status_counts"].get("201", 0),
            "verify_user_faces": verify_faces,
            "warmup_requests_per_endpoint": WARMUP_REQUESTS,
            "concurrency": 1,
            "seed": args.seed,
            "device": Settings().device,
            "database": "sqlite (temporary file)",
            "data": "LFW deep-funneled, 250x250 JPEG",
        },
        "startup": {
            "livez_s": round(livez_s, 3),
            "readyz_s": round(readyz_s, 3),
            "models": ready["models"],
        },
        "endpoints": {s.name: s.summary() for s in endpoints},
        "server": {
            "peak_rss_mib": round(peak_kib / 1024, 1) if peak_kib else None,
            "rss_mib": round(rss_kib / 1024, 1) if rss_kib else None,
            "exit_code_on_sigterm": exit_code,
        },
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
