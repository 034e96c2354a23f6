"""FaceNet quantisation: dynamic-range int8, static int8 and fp16 TFLite variants against the
service's fp32 TFLite model (facenet-tflite), for speed and LFW accuracy, in one run.

    .venv/bin/python bench/quantisation.py [--pairs-limit N] [--seconds 3]
        [--calibration-faces 200] [--out bench/results/quantisation.json]

The variants are converted at run time, each in a fresh child process (the converter leaks
memory), into a temporary folder from models/facenet_128.pb with the service's own converter
settings (``frozen_graph_to_tflite``): int8-dynamic (``Optimize.DEFAULT``, int8 weights,
activations quantised on the fly), int8-static (``Optimize.DEFAULT`` plus a representative
data set of ``--calibration-faces`` prewhitened CUHK web faces, never LFW; float input and
output) and fp16 (float16 weights). fp32 is models/facenet_128.tflite as the service runs it.
Every variant runs through ``TFLiteFaceNetEmbedder``, so preprocessing is identical.

Speed: ms per face, the median of ``--seconds`` of calls per variant at batch 1 and 8, with 1
and 2 interpreter threads, on the same random crops; the variants take turns (3 rounds each)
so a change in the machine's load hits all of them. Accuracy: every LFW image of pairs.txt is
decoded and detected once through the service's pipeline (BlazeFace, face nearest the centre,
the service's crop, as ``facesvc eval lfw`` does; an image without a face scores -1 in its
pairs, an error for a genuine pair), then the same 160x160 crops are embedded by every variant
and scored with the evaluation's own ``ten_fold``. Per variant: 10-fold accuracy and its
change vs fp32 in points, AUC, cosine of each crop's embedding to fp32's (mean, min), pair
decisions that flip vs fp32 at the manifest's threshold, and a verdict: "default-eligible"
only when accuracy drops by <= 0.1 point AND batch 1 with 2 threads is >= 1.1x faster than
fp32 (a smaller gain is within this machine's noise).

A full run (6000 pairs, 7701 images) takes about 25-30 minutes on the 2-core dev VM: the
conversions ~2 min, detection ~1-2 min, embedding ~5.5 min per variant (~42 ms a face), the
timing ~1 min. ``--pairs-limit 200 --seconds 1 --calibration-faces 50`` takes ~2.5 minutes.
fp16 runs the fp32 kernels (its weights are dequantised at load), so its speed is fp32's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from core_latency import machine_info

from facesvc.evaluation.lfw import (
    Pair,
    nearest_centre,
    pair_scores,
    read_pairs,
    roc_auc,
    select_pairs,
    ten_fold,
)
from facesvc.settings import Settings

VARIANTS = ("fp32", "int8-dynamic", "int8-static", "fp16")
DESCRIPTIONS = {
    "fp32": "models/facenet_128.tflite, the service default (facenet-tflite)",
    "int8-dynamic": "dynamic-range: int8 weights, activations quantised at run time",
    "int8-static": "full static int8, calibrated on CUHK web faces; float input/output",
    "fp16": "float16 weights (dequantised to fp32 at load)",
}
THREADS = (1, 2)
BATCHES = (1, 8)
ROUNDS = 3  # timing: the variants take turns, ROUNDS times per configuration
EMBED_BATCH = 8  # LFW crops per call when embedding for accuracy
DECIDING = "batch1_threads2"  # verdict: the timing a default must beat fp32 at
MAX_DROP_POINTS = 0.1  # verdict: the largest accuracy drop vs fp32 a default may have
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16")


# ---------------------------------------------------------------- child: convert + inspect


def convert(variant: str, pb: Path, out: Path, calibration: Path | None) -> None:
    """One variant from the frozen graph, by the service's own converter."""
    from facesvc.inference.convert import frozen_graph_to_tflite
    from facesvc.inference.embedders.facenet import prewhiten

    if variant not in ("int8-dynamic", "int8-static", "fp16"):
        raise ValueError(f"unknown variant {variant!r}")
    faces = np.load(calibration) if variant == "int8-static" and calibration else None

    def representative() -> Any:
        for face in faces if faces is not None else []:
            yield [prewhiten(face[None])]

    frozen_graph_to_tflite(str(pb), str(out), 160, variant, representative)


def inspect(path: Path) -> dict[str, Any]:
    """A model's op mix (ops by the types of their inputs) and which ops the default delegate
    (XNNPACK) took: an op runs outside it when one of its outputs feeds a delegate node, is a
    model output no delegate node produces, or one of its constant inputs is not a delegate
    node's input (a delegated op's weights are)."""
    from facesvc.inference.runtimes.tflite import _make_interpreter

    interpreter = _make_interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    model_ops = [op for op in ops if op["op_name"] != "DELEGATE"]
    produced = {t for op in model_ops for t in op["outputs"]}
    model_inputs = {d["index"] for d in interpreter.get_input_details()}
    model_outputs = {d["index"] for d in interpreter.get_output_details()}
    into_delegates = {t for op in delegates for t in op["inputs"]}
    from_delegates = {t for op in delegates for t in op["outputs"]}
    by_types: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for op in model_ops:
        inputs = [t for t in op["inputs"] if t >= 0]
        by_types["/".join(sorted({dtypes[t] for t in inputs}))] += 1
        constants = [t for t in inputs if t not in produced and t not in model_inputs]
        if (
            not delegates
            or any(t in into_delegates for t in op["outputs"])
            or any(t in model_outputs and t not in from_delegates for t in op["outputs"])
            or any(t not in into_delegates for t in constants)
        ):
            outside[op["op_name"]] += 1
    return {
        "ops": len(model_ops),
        "ops_by_input_types": dict(by_types.most_common()),
        "delegate_nodes": len(delegates),
        "ops_in_xnnpack": len(model_ops) - sum(outside.values()),
        "ops_outside_xnnpack": dict(outside.most_common()),
    }


def child(variant: str, pb: Path, out: Path, calibration: Path | None) -> dict[str, Any]:
    start = time.perf_counter()
    if variant != "fp32":
        convert(variant, pb, out, calibration)
    seconds = time.perf_counter() - start
    return {"convert_seconds": round(seconds, 1), **inspect(out)}


def build(variant: str, pb: Path, out: Path, calibration: Path) -> dict[str, Any]:
    """Runs the child for one variant: its row, or the error it ended with."""
    command = [sys.executable, __file__, "--child", variant, "--pb", str(pb)]
    command += ["--model-out", str(out), "--calibration", str(calibration)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0 or not out.exists():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": " | ".join(lines[-3:]) or f"exit code {done.returncode}"}
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


# ---------------------------------------------------------------- data: CUHK and LFW crops


def calibration_faces(settings: Settings, count: int) -> np.ndarray:
    """The first ``count`` labelled CUHK web faces, cropped as the service crops (uint8): the
    same set `models pull` quantises the OpenVINO int8 model with."""
    from facesvc.inference.convert import cuhk_calibration_faces

    faces: np.ndarray = cuhk_calibration_faces(str(settings.data_dir), count)
    return faces


async def lfw_crops(settings: Settings, names: list[str]) -> tuple[dict[str, Any], float]:
    """The 160x160 crop of the face nearest the centre of each image (None: no face found),
    through the service's decode and detect, each image once."""
    from facesvc.inference.geometry import face_crop
    from facesvc.inference.pipeline import FacePipeline, PipelineLimits
    from facesvc.inference.registry import ModelRegistry

    registry = ModelRegistry(settings)
    await registry.start()
    pipeline = FacePipeline(registry, PipelineLimits.from_settings(settings))
    root = settings.data_dir / "lfw" / "lfw-deepfunneled"
    crops: dict[str, np.ndarray | None] = {}
    semaphore = asyncio.Semaphore(4)  # as the evaluation: decode and detect overlap

    async def one(name: str) -> None:
        async with semaphore:
            image = await pipeline.decode(await asyncio.to_thread((root / name).read_bytes))
            detections = await pipeline.detect(image)
        if not detections:
            crops[name] = None
            return
        centre = nearest_centre(detections, image.shape[1], image.shape[0])
        crops[name] = face_crop(
            image, centre.box, registry.crop_policy, registry.embedder_input_size
        )

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one(name) for name in names))
    finally:
        await registry.aclose()
    return crops, time.perf_counter() - start


# ---------------------------------------------------------------- measurements


def embed(model: Any, crops: np.ndarray) -> np.ndarray:
    out = [model.predict(crops[i : i + EMBED_BATCH]) for i in range(0, len(crops), EMBED_BATCH)]
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def timings(paths: dict[str, Path], seconds: float) -> dict[str, dict[str, float]]:
    """ms per face by variant and "batchB_threadsT": the median of per-call times / batch."""
    from facesvc.inference.embedders.facenet import TFLiteFaceNetEmbedder

    data = np.random.default_rng(0).integers(0, 255, size=(8, 160, 160, 3), dtype=np.uint8)
    result: dict[str, dict[str, float]] = {name: {} for name in paths}
    for threads in THREADS:
        models = {name: TFLiteFaceNetEmbedder(p, threads=threads) for name, p in paths.items()}
        for batch in BATCHES:
            crops = data[:batch]
            calls: dict[str, list[float]] = {name: [] for name in models}
            for model in models.values():  # warm-up: resize and first-call costs
                model.predict(crops)
                model.predict(crops)
            for _ in range(ROUNDS):
                for name, model in models.items():
                    stop = time.perf_counter() + seconds / ROUNDS
                    while time.perf_counter() < stop or len(calls[name]) < 2:
                        started = time.perf_counter()
                        model.predict(crops)
                        calls[name].append(time.perf_counter() - started)
            for name, times in calls.items():
                ms = 1000 * float(np.median(times)) / batch
                result[name][f"batch{batch}_threads{threads}"] = round(ms, 2)
            print(
                f"  batch {batch}, {threads} thread(s): "
                + ", ".join(f"{n} {result[n][f'batch{batch}_threads{threads}']:.1f}" for n in calls)
                + " ms/face",
                flush=True,
            )
        del models
    return result


MIN_SPEEDUP = 1.1  # a smaller gain is within this machine's run-to-run noise


def verdict(row: dict[str, Any], base: dict[str, Any]) -> str:
    if row["variant"] == "fp32":
        return "baseline"
    if "error" in row:
        return "conversion failed"
    reasons = []
    if row["nan_embeddings"]:
        reasons.append(f"{row['nan_embeddings']} embeddings contain NaN")
    drop = -row["accuracy_change_points"]
    if not drop <= MAX_DROP_POINTS:
        reasons.append(f"accuracy drops {drop:.2f} points (> {MAX_DROP_POINTS})")
    mine, theirs = row["ms_per_face"][DECIDING], base["ms_per_face"][DECIDING]
    if not mine * MIN_SPEEDUP <= theirs:
        reasons.append(
            f"not {MIN_SPEEDUP:g}x faster at batch 1, 2 threads ({mine:.1f} vs {theirs:.1f} "
            "ms/face): a gain within the machine's noise does not change a default"
        )
    return "default-eligible" if not reasons else "not eligible: " + "; ".join(reasons)


def cpu_flags() -> dict[str, bool]:
    from facesvc.inference.runtimes import cpu_flags as all_flags

    flags = all_flags()
    found = {flag: flag in flags for flag in CPU_FLAGS}
    found["amx"] = any(flag.startswith("amx") for flag in flags)
    return found


def interpreter_name() -> str:
    try:
        import ai_edge_litert  # noqa: F401

        return "ai_edge_litert"
    except ImportError:
        return "tf.lite"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'variant':13} {'MiB':>5}  {'b1/1t':>6} {'b8/1t':>6} {'b1/2t':>6} {'b8/2t':>6}  "
        f"{'LFW acc':>14} {'d pts':>6} {'AUC':>6}  {'cos mean':>8} {'cos min':>7} "
        f"{'flips':>5} {'XNNPACK':>7}  verdict"
    )
    print(f"\n{head}\n{'':20}(ms per face: batch / threads)")
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:13} conversion failed: {row['error'][:100]}")
            continue
        ms = row["ms_per_face"]
        print(
            f"{row['variant']:13} {row['size_mib']:5.1f}  {ms['batch1_threads1']:6.1f} "
            f"{ms['batch8_threads1']:6.1f} {ms['batch1_threads2']:6.1f} "
            f"{ms['batch8_threads2']:6.1f}  "
            f"{100 * row['accuracy_mean']:6.2f} ± {100 * row['accuracy_std']:5.2f} "
            f"{row['accuracy_change_points']:+6.2f} {row['roc_auc']:6.4f}  "
            f"{row['cosine_vs_fp32_mean']:8.5f} {row['cosine_vs_fp32_min']:7.4f} "
            f"{row['decision_flips_vs_fp32']:5d} {row['ops_in_xnnpack']:3d}/{row['ops']:<3d}  "
            f"{row['verdict']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--pairs-limit",
        type=int,
        default=None,
        help="LFW pairs in all (default: all 6000), split evenly over the 10 folds, each "
        "half genuine and half impostor",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per configuration")
    parser.add_argument("--calibration-faces", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quantisation.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pb", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--calibration", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pb, args.model_out, args.calibration)))
        return
    if args.pairs_limit is not None and args.pairs_limit < 20:
        parser.error("--pairs-limit must be at least 20 (1 genuine + 1 impostor per fold)")

    from facesvc.inference.embedders.facenet import TFLiteFaceNetEmbedder
    from facesvc.inference.manifest import Manifest

    settings = Settings(dev_mode=True)
    manifest = Manifest.load(settings.manifest_path)
    threshold = manifest.models["facenet-tflite"].threshold
    assert threshold is not None
    machine = machine_info()
    per_fold = None if args.pairs_limit is None else args.pairs_limit // 10
    pairs: list[Pair] = select_pairs(
        read_pairs(settings.data_dir / "lfw" / "pairs.txt"), 10, per_fold
    )
    names = sorted({p.a for p in pairs} | {p.b for p in pairs})

    with tempfile.TemporaryDirectory(prefix="facesvc-quant-") as tmp:
        work = Path(tmp)
        calibration = work / "calibration.npy"
        np.save(calibration, calibration_faces(settings, args.calibration_faces))
        pb = settings.models_dir / "facenet_128.pb"
        paths = {name: work / f"facenet_128_{name}.tflite" for name in VARIANTS}
        paths["fp32"] = settings.models_dir / "facenet_128.tflite"
        rows: dict[str, dict[str, Any]] = {}
        for name in VARIANTS:
            print(f"{name}: converting and inspecting ...", flush=True)
            rows[name] = {"variant": name, "description": DESCRIPTIONS[name]}
            rows[name].update(build(name, pb, paths[name], calibration))
            if "error" in rows[name]:
                print(f"  FAILED: {rows[name]['error']}", flush=True)
                continue
            rows[name]["size_mib"] = round(paths[name].stat().st_size / 2**20, 2)
            row = rows[name]
            print(
                f"  {row['convert_seconds']} s, {row['size_mib']} MiB, ops by input types "
                f"{row['ops_by_input_types']}, {row['ops_in_xnnpack']}/{row['ops']} in XNNPACK "
                f"(outside: {row['ops_outside_xnnpack']})",
                flush=True,
            )
        if "error" in rows["fp32"]:
            raise SystemExit(f"fp32 model unusable: {rows['fp32']['error']}")
        ok = {name: paths[name] for name in VARIANTS if "error" not in rows[name]}

        print(f"LFW: decoding and detecting {len(names)} images ...", flush=True)
        crops, detect_s = asyncio.run(lfw_crops(settings, names))
        found = [name for name in names if crops[name] is not None]
        missing = set(names) - set(found)
        failed = sorted(missing)
        stack = (
            np.stack([crops[n] for n in found]) if found else np.zeros((0, 160, 160, 3), np.uint8)
        )
        del crops

        print("timing (ms per face) ...", flush=True)
        speed = timings(ok, args.seconds)

        same = np.array([p.same for p in pairs])
        folds = np.array([p.fold for p in pairs])
        embeddings: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {}
        threads = len(os.sched_getaffinity(0))
        for name, path in ok.items():
            print(f"{name}: embedding {len(stack)} LFW crops ...", flush=True)
            model = TFLiteFaceNetEmbedder(path, threads=threads)
            start = time.perf_counter()
            vectors = embed(model, stack)
            elapsed = time.perf_counter() - start
            del model
            embeddings[name] = vectors
            by_name: dict[str, np.ndarray | None] = dict.fromkeys(failed)
            by_name.update(zip(found, vectors, strict=True))
            scores[name] = pair_scores(pairs, by_name)
            folded = ten_fold(scores[name], same, folds)
            rows[name].update(
                ms_per_face=speed[name],
                embed_seconds=round(elapsed, 1),
                nan_embeddings=int(np.isnan(vectors).any(axis=1).sum()),
                accuracy_mean=round(float(folded["accuracy_mean"]), 5),  # type: ignore[arg-type]
                accuracy_std=round(float(folded["accuracy_std"]), 5),  # type: ignore[arg-type]
                best_threshold=round(float(folded["threshold"]), 4),  # type: ignore[arg-type]
                roc_auc=round(roc_auc(scores[name], same), 5),
            )

    base = rows["fp32"]
    accepted = scores["fp32"] >= threshold
    for name in ok:
        row = rows[name]
        cosines = np.sum(embeddings[name] * embeddings["fp32"], axis=1)
        row["accuracy_change_points"] = round(
            100 * (row["accuracy_mean"] - base["accuracy_mean"]), 2
        )
        row["cosine_vs_fp32_mean"] = round(float(cosines.mean()), 6) if len(cosines) else None
        row["cosine_vs_fp32_min"] = round(float(cosines.min()), 6) if len(cosines) else None
        row["decision_flips_vs_fp32"] = int(np.sum((scores[name] >= threshold) != accepted))
        row["speedup_vs_fp32"] = {
            key: round(base["ms_per_face"][key] / ms, 3) for key, ms in row["ms_per_face"].items()
        }
    for row in rows.values():
        row["verdict"] = verdict(row, base)

    results = [rows[name] for name in VARIANTS]
    print_table(results)
    print(
        f"\n{len(pairs)} LFW pairs, {len(names)} images ({len(failed)} without a face, scored "
        f"-1), flips at the manifest threshold {threshold}; detection {detect_s:.0f} s"
    )
    import tensorflow as tf

    payload = {
        "benchmark": "quantisation",
        "machine": {
            **machine,
            "cpu_flags": cpu_flags(),
            "tensorflow_version": tf.__version__,
            "tflite_interpreter": interpreter_name(),
        },
        "config": {
            "pairs_limit": args.pairs_limit,
            "seconds_per_configuration": args.seconds,
            "timing_rounds": ROUNDS,
            "timing_input": "8 random uint8 160x160 crops (seed 0), the same for every variant",
            "calibration_faces": args.calibration_faces,
            "calibration_source": "cuhk_5pt/testImageList.txt, first N, labelled box, "
            "square crop x1.2, prewhitened",
            "accuracy_threads": threads,
            "accuracy_batch": EMBED_BATCH,
            "manifest_threshold": threshold,
            "max_accuracy_drop_points": MAX_DROP_POINTS,
        },
        "lfw": {
            "pairs": len(pairs),
            "images": len(names),
            "failures_to_detect": len(failed),
            "failed_images": failed,
            "pairs_with_failure": sum(p.a in missing or p.b in missing for p in pairs),
            "detect_seconds": round(detect_s, 1),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
