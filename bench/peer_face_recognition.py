"""The face_recognition (dlib) peer on the same LFW 10-fold protocol as ``facesvc eval lfw``.

    .venv/bin/python bench/peer_face_recognition.py [--folds N] [--limit N] [--speed-images N]

Per image: dlib's HOG detector (``face_recognition.face_locations``, model "hog", upsampled
once, the library's default), the face nearest the image centre (LFW's labelled person, the
rule facesvc's evaluation uses), its 128-d encoding (``face_encodings``, 5-point model,
one jitter). A pair's score is the negative Euclidean distance, so the threshold search,
10-fold protocol, AUC and TAR at FAR are facesvc's own (``facesvc.evaluation.lfw``). An image
without a face makes its pairs errors (score ``FAILED_SCORE``, below any real one).
Also reported: accuracy at the library's documented tolerance (distance <= 0.6) and the time
to detect per image and to encode per face, on one thread of this machine; and, on
``--speed-images`` LFW photos (default 200), both libraries timed back to back in one process
(``speed_same_run``: detect per image, encode per face, and the ratios).

Needs (not in facesvc's own dependencies): ``dlib-bin`` (a prebuilt dlib wheel),
``face-recognition-models`` (the weights) and ``face_recognition`` installed with
``--no-deps`` (its metadata asks for ``dlib``, which would build dlib from source).
Encodings are cached in ``var/eval_cache/peer_face_recognition.npz`` (delete it to recompute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation.curves import score_summary
from facesvc.evaluation.lfw import (
    rates_at,
    read_pairs,
    roc_auc,
    select_pairs,
    tar_at_far,
    ten_fold,
)
from facesvc.evaluation.progress import ProgressReporter
from facesvc.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FAILED_SCORE = -10.0  # negative distance of a pair with no face: below any real pair
TOLERANCE = 0.6  # face_recognition's documented default distance threshold
CACHE = ROOT / "var" / "eval_cache" / "peer_face_recognition.npz"


def nearest_centre(locations: list[tuple[int, int, int, int]], width: int, height: int) -> int:
    """Index of the (top, right, bottom, left) box whose centre is nearest the image centre."""
    cx, cy = width / 2.0, height / 2.0
    return min(
        range(len(locations)),
        key=lambda i: (
            ((locations[i][1] + locations[i][3]) / 2 - cx) ** 2
            + ((locations[i][0] + locations[i][2]) / 2 - cy) ** 2
        ),
    )


def load_cache(path: Path) -> dict[str, np.ndarray | None]:
    if not path.exists():
        return {}
    data = np.load(path)
    return {
        str(name): (vector if ok else None)
        for name, vector, ok in zip(data["names"], data["encodings"], data["found"], strict=True)
    }


def save_cache(path: Path, encodings: dict[str, np.ndarray | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(encodings)
    vectors = np.stack(
        [v if (v := encodings[n]) is not None else np.zeros(128) for n in names]
    ).astype(np.float64)
    found = np.array([encodings[n] is not None for n in names])
    np.savez(path.with_suffix(".tmp.npz"), names=np.array(names), encodings=vectors, found=found)
    path.with_suffix(".tmp.npz").replace(path)


def encode_images(
    root: Path, names: list[str], cache: dict[str, np.ndarray | None]
) -> tuple[dict[str, np.ndarray | None], list[float], list[float], list[int]]:
    """Encodings of the centre face; detect ms per image, encode ms per face, faces per image."""
    import face_recognition

    detect_ms: list[float] = []
    encode_ms: list[float] = []
    face_counts: list[int] = []
    todo = [n for n in names if n not in cache]
    with ProgressReporter("face_recognition on LFW images", len(names)) as progress:
        progress.advance(len(names) - len(todo))
        for done, name in enumerate(todo, 1):
            image = face_recognition.load_image_file(root / name)
            start = time.perf_counter()
            locations = face_recognition.face_locations(
                image, number_of_times_to_upsample=1, model="hog"
            )
            detect_ms.append(1000 * (time.perf_counter() - start))
            face_counts.append(len(locations))
            if not locations:
                cache[name] = None
            else:
                chosen = locations[nearest_centre(locations, image.shape[1], image.shape[0])]
                start = time.perf_counter()
                (encoding,) = face_recognition.face_encodings(
                    image, known_face_locations=[chosen], num_jitters=1, model="small"
                )
                encode_ms.append(1000 * (time.perf_counter() - start))
                cache[name] = np.asarray(encoding, dtype=np.float64)
            progress.advance(1)
            if done % 500 == 0:
                save_cache(CACHE, cache)
    if todo:
        save_cache(CACHE, cache)
    return cache, detect_ms, encode_ms, face_counts


def speed_side_by_side(root: Path, names: list[str]) -> dict[str, Any]:
    """Per-image detect and per-face encode times of both libraries on the same images, back
    to back in this one process (the ratio is what to compare: the machine's speed moves)."""
    import face_recognition

    from facesvc.inference.geometry import face_crop
    from facesvc.inference.images import decode_image
    from facesvc.inference.registry import ModelRegistry

    settings = Settings(dev_mode=True)
    registry = ModelRegistry(settings)
    registry.start_sync()
    detector, mesh, embedder = (
        r.model for r in (registry.detector, registry.mesh, registry.embedder)
    )
    peer: dict[str, list[float]] = {"detect": [], "encode": []}
    ours: dict[str, list[float]] = {"detect": [], "landmarks": [], "encode": []}
    try:
        for name in names:
            data = (root / name).read_bytes()
            image = face_recognition.load_image_file(root / name)
            start = time.perf_counter()
            locations = face_recognition.face_locations(image, 1, "hog")
            peer["detect"].append(1000 * (time.perf_counter() - start))
            if locations:
                start = time.perf_counter()
                face_recognition.face_encodings(image, [locations[0]], 1, "small")
                peer["encode"].append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            decoded = decode_image(data, max_pixels=settings.max_image_pixels)
            (found,) = detector.predict([decoded])
            ours["detect"].append(1000 * (time.perf_counter() - start))
            if found:
                start = time.perf_counter()
                mesh.predict([(decoded, found[0])])
                ours["landmarks"].append(1000 * (time.perf_counter() - start))
                start = time.perf_counter()
                crop = face_crop(decoded, found[0].box, registry.crop_policy, 160)
                embedder.predict(crop[None])
                ours["encode"].append(1000 * (time.perf_counter() - start))
    finally:
        registry.close()
    peer_total = np.median(peer["detect"]) + np.median(peer["encode"])
    ours_total = sum(float(np.median(v)) for v in ours.values())
    return {
        "images": len(names),
        "face_recognition": {k: timing(v) for k, v in peer.items()},
        "facesvc": {k: timing(v) for k, v in ours.items()}
        | {
            "models": [
                registry.detector_spec.name,
                registry.mesh_spec.name,
                registry.embedder_spec.name,
            ]
        },
        "encode_speedup": round(float(np.median(peer["encode"]) / np.median(ours["encode"])), 2),
        "image_speedup": round(float(peer_total / ours_total), 2),
        "note": "same images, alternating, one process; dlib on its own threading, facesvc with "
        "its default settings (TFLite FaceNet on every core, BlazeFace and mesh on one); "
        "facesvc's detect includes decoding, its encode includes the crop",
    }


def timing(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {
        "count": len(values),
        "median_ms": round(float(np.median(array)), 2),
        "mean_ms": round(float(array.mean()), 2),
        "p95_ms": round(float(np.percentile(array, 95)), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each fold")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "peer_face_recognition.json"
    )
    parser.add_argument(
        "--speed-images",
        type=int,
        default=200,
        help="LFW images timed with both libraries back to back (0: skip)",
    )
    args = parser.parse_args()

    try:
        import dlib
        import face_recognition  # noqa: F401  (fail early, with the install hint)
    except ImportError as exc:
        sys.exit(
            f"{exc}: install with `pip install dlib-bin face-recognition-models` and "
            "`pip install --no-deps face_recognition`"
        )

    data_dir = Settings().data_dir
    root = data_dir / "lfw" / "lfw-deepfunneled"
    pairs = select_pairs(read_pairs(data_dir / "lfw" / "pairs.txt"), args.folds, args.limit)
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})
    cache = load_cache(CACHE)
    cached = sum(n in cache for n in names)
    started = time.perf_counter()
    encodings, detect_ms, encode_ms, face_counts = encode_images(root, names, cache)
    wall = time.perf_counter() - started

    scores = []
    for pair in pairs:
        a, b = encodings[pair.a], encodings[pair.b]
        scores.append(FAILED_SCORE if a is None or b is None else -float(np.linalg.norm(a - b)))
    score_array = np.array(scores)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    failed = sorted(n for n in names if encodings[n] is None)

    result: dict[str, Any] = {
        "peer": "face_recognition (dlib HOG detector + dlib ResNet 128-d, 5-point alignment)",
        "protocol": "LFW pairs.txt, threshold chosen on 9 folds and tested on the 10th "
        "(facesvc.evaluation.lfw.ten_fold on negative Euclidean distances); face nearest the "
        "image centre; failures to detect count as errors",
        "folds": args.folds,
        "limit_per_fold": args.limit,
        "pairs": len(pairs),
        "images": len(names),
        **ten_fold(score_array, same, folds),
        "roc_auc": roc_auc(score_array, same),
    }
    result["threshold_distance"] = -float(result["threshold"])
    for far in (1e-2, 1e-3):
        tar, threshold = tar_at_far(score_array, same, far)
        result[f"tar_at_far_{far:g}"] = tar
        result[f"distance_at_far_{far:g}"] = -threshold
    result["at_tolerance_0.6"] = rates_at(score_array, same, -TOLERANCE)
    result["failures_to_detect"] = len(failed)
    result["failed_images"] = failed
    result["pairs_with_failure"] = sum(p.a in failed or p.b in failed for p in pairs)
    result["distances"] = {
        "genuine": score_summary(-score_array[same & (score_array > FAILED_SCORE)]),
        "impostor": score_summary(-score_array[~same & (score_array > FAILED_SCORE)]),
    }
    result["timing"] = {
        "images_from_cache": cached,
        "images_computed": len(names) - cached,
        "wall_seconds": round(wall, 1),
        "detect_per_image": timing(detect_ms),
        "encode_per_face": timing(encode_ms),
        "faces_per_image_mean": (round(float(np.mean(face_counts)), 3) if face_counts else None),
        "note": "one process, dlib's own threading; timings only for images computed in this run",
    }
    if args.speed_images:
        result["speed_same_run"] = speed_side_by_side(
            root, names[:: max(1, len(names) // args.speed_images)][: args.speed_images]
        )
    facesvc_lfw = ROOT / "docs" / "eval" / "lfw.json"
    if facesvc_lfw.exists():
        own = json.loads(facesvc_lfw.read_text(encoding="utf-8"))
        result["facesvc_same_folds"] = {
            key: own.get(key)
            for key in (
                "accuracy_mean",
                "accuracy_std",
                "roc_auc",
                "tar_at_far_0.01",
                "tar_at_far_0.001",
                "failures_to_detect",
                "pairs",
            )
        } | {"source": "docs/eval/lfw.json"}
    result["versions"] = {
        "dlib": dlib.__version__,
        "dlib_uses_cuda": bool(dlib.DLIB_USE_CUDA),
        "face_recognition": importlib.metadata.version("face_recognition"),
        "face_recognition_models": importlib.metadata.version("face_recognition_models"),
        "dlib_distribution": "dlib-bin " + importlib.metadata.version("dlib-bin"),
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }
    result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["command"] = "python bench/peer_face_recognition.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"face_recognition: accuracy {result['accuracy_mean']:.4f} +- "
        f"{result['accuracy_std']:.4f}, AUC {result['roc_auc']:.4f}, "
        f"TAR {result['tar_at_far_0.01']:.4f} at FAR 1e-2, {result['tar_at_far_0.001']:.4f} "
        f"at FAR 1e-3, failures to detect {len(failed)} of {len(names)} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
