"""``facesvc eval ...``: evaluations on public data through the service's own pipeline.

Every command loads the configured models exactly as the service does (``--detector`` picks
another manifest detector), writes a JSON report (and for LFW a ROC plot and the raw scores)
and prints a one-line summary. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from facesvc.cli._support import fail
from facesvc.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from facesvc.evaluation.cache import EmbeddingCache
    from facesvc.inference.calibration import ScoreCalibration
    from facesvc.inference.pipeline import FacePipeline

T = TypeVar("T")

eval_app = typer.Typer(
    help="Evaluate on public data through the service's pipeline.", no_args_is_help=True
)

DEFAULT_CACHE = PROJECT_ROOT / "var" / "eval_cache"

DetectorOption = Annotated[
    str | None,
    typer.Option(
        "--detector",
        help="Manifest detector to use (blazeface, blazeface-short, mtcnn); default: settings",
    ),
]
EmbedderOption = Annotated[
    str | None,
    typer.Option("--embedder", help="Manifest embedder to use (e.g. facenet); default: settings"),
]
CacheOption = Annotated[
    Path,
    typer.Option("--cache-dir", help="Embedding cache shared by the LFW evaluations"),
]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Recompute every embedding (and do not store them)")
]
ConcurrencyOption = Annotated[
    int, typer.Option(min=1, max=64, help="Images in flight at once (the runners batch them)")
]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        help="Score calibration file (facesvc eval calibrate); default: the embedder's "
        "calibration_file in the manifest",
    ),
]


def _settings(detector: str | None, embedder: str | None = None) -> Settings:
    """Settings from the environment, with these models instead of the configured ones."""
    from facesvc.inference.manifest import Manifest

    overrides: dict[str, Any] = {"detector": detector, "embedder": embedder}
    settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    try:
        manifest = Manifest.load(settings.manifest_path)
        manifest.get(settings.detector, "detector")
        manifest.get(settings.embedder, "embedder")
    except (KeyError, ValueError) as exc:
        raise fail(str(exc).strip("'\""), 2) from exc
    return settings


def _load_calibration(settings: Settings, path: Path | None) -> ScoreCalibration | None:
    """The score calibration at ``path``, else the embedder's (None, with a warning, when the
    manifest names none or its file is missing)."""
    from facesvc.inference.calibration import ScoreCalibration
    from facesvc.inference.manifest import Manifest

    spec = Manifest.load(settings.manifest_path).get(settings.embedder, "embedder")
    path = path or spec.calibration_path(settings.models_dir)
    if path is None or not path.exists():
        typer.secho(
            f"warning: no score calibration for {spec.name} ({path or 'none in the manifest'}); "
            "run `facesvc eval calibrate`",
            err=True,
            fg=typer.colors.YELLOW,
        )
        return None
    try:
        calibration = ScoreCalibration.load(path)
    except (ValueError, KeyError) as exc:
        raise fail(f"{path}: {exc}", 2) from exc
    if calibration.space != spec.embedding_space:
        raise fail(f"{path} calibrates {calibration.space!r}, not {spec.embedding_space!r}", 2)
    return calibration


def _display_path(path: Path) -> str:
    """``path`` relative to the project when inside it (reports stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _require(path: Path, what: str, settings: Settings) -> None:
    if not path.exists():
        raise fail(f"{what} not found at {path} (set FACESVC_DATA_DIR; now {settings.data_dir})", 2)


def _with_pipeline(
    settings: Settings, work: Callable[[FacePipeline], Awaitable[T]], *, load: bool = True
) -> T:
    """Load, warm and close the models around ``work`` (the service's registry and pipeline).

    With ``load=False`` the models load only when ``work`` needs them (the embedding cache
    answers everything on a rerun)."""
    import asyncio

    from facesvc.inference.pipeline import FacePipeline
    from facesvc.inference.registry import ModelFileError, ModelRegistry

    async def main() -> T:
        registry = ModelRegistry(settings)
        try:
            if load:
                await registry.start()
            return await work(FacePipeline(registry))
        finally:
            registry.close()

    try:
        return asyncio.run(main())
    except ModelFileError as exc:
        raise fail(str(exc)) from exc


def _open_cache(pipeline: FacePipeline, cache_dir: Path, no_cache: bool) -> EmbeddingCache | None:
    from facesvc.evaluation.cache import EmbeddingCache

    return None if no_cache else EmbeddingCache.for_pipeline(cache_dir, pipeline)


def _command(name: str) -> str:
    """The command line that reproduces this run, as ``facesvc eval NAME ...``."""
    argv = sys.argv[1:]
    rest = argv[argv.index(name) + 1 :] if name in argv else []
    return shlex.join(["facesvc", "eval", name, *rest])


def _describe(pipeline: FacePipeline, name: str) -> dict[str, Any]:
    """What produced the figures: models, settings that matter, machine, command, date."""
    import importlib.metadata

    registry = pipeline.registry
    settings = registry.settings
    return {
        "command": _command(name),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "models": {
            "detector": registry.detector_spec.name,
            "detector_version": registry.detector_spec.version,
            "mesh": registry.mesh_spec.name,
            "embedder": registry.embedder_spec.name,
            "embedder_version": registry.embedder_spec.version,
            "crop": {
                "square": registry.crop_policy.square,
                "scale": registry.crop_policy.scale,
            },
            "device": settings.device,
            "detection_min_score": settings.detection_min_score,
            "detection_max_side": settings.detection_max_side,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "tensorflow": importlib.metadata.version("tensorflow"),
            "facesvc": importlib.metadata.version("facesvc"),
        },
    }


def _write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


@eval_app.command("lfw")
def eval_lfw(
    folds: Annotated[int, typer.Option(min=2, max=10, help="Use the first N folds")] = 10,
    limit: Annotated[
        int | None,
        typer.Option(
            min=2, help="Quick subset: the first N pairs of each fold (half same, half different)"
        ),
    ] = None,
    detector: DetectorOption = None,
    embedder: EmbedderOption = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/lfw.json"),
    cache_dir: CacheOption = DEFAULT_CACHE,
    no_cache: NoCacheOption = False,
    concurrency: ConcurrencyOption = 4,
) -> None:
    """LFW 10-fold verification: accuracy, AUC, TAR at FAR, best threshold.

    Beside OUTPUT: STEM_roc.png (ROC) and STEM_scores.npz (per-pair scores, pairs.txt order).
    """
    import numpy as np

    from facesvc.evaluation.curves import CurveMark, plot_roc
    from facesvc.evaluation.lfw import rates_at, read_pairs, run_lfw, select_pairs
    from facesvc.evaluation.progress import ProgressReporter

    try:  # fail now, not after the images are embedded
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise fail("the ROC plot needs matplotlib: pip install matplotlib", 2) from exc
    settings = _settings(detector, embedder)
    pairs_file = settings.data_dir / "lfw" / "pairs.txt"
    _require(pairs_file, "LFW", settings)
    pairs = select_pairs(read_pairs(pairs_file), folds, limit)
    total = len({p.a for p in pairs} | {p.b for p in pairs})

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        cache = _open_cache(pipeline, cache_dir, no_cache)
        try:
            with ProgressReporter("embedding LFW images", total) as progress:
                run = await run_lfw(
                    pipeline,
                    settings.data_dir,
                    folds,
                    progress.advance,
                    limit=limit,
                    cache=cache,
                    concurrency=concurrency,
                    skipped=progress.skip,
                )
        finally:
            if cache is not None:
                cache.close()
        plot = output.with_name(f"{output.stem}_roc.png")
        scores_file = output.with_name(f"{output.stem}_scores.npz")
        result: dict[str, Any] = run.result
        same = run.same
        threshold = float(result["threshold"])
        chosen = rates_at(run.scores, same, threshold)
        marks = [
            CurveMark(
                f"TAR {result[f'tar_at_far_{far:g}']:.4f} at FAR {far:g}",
                far=float(np.mean(run.scores[~same] >= result[f"threshold_at_far_{far:g}"])),
                tar=float(result[f"tar_at_far_{far:g}"]),
            )
            for far in (1e-2, 1e-3)
        ]
        marks.append(
            CurveMark(
                f"best threshold {threshold:.3f}: TAR {chosen['tar']:.4f}, FAR {chosen['far']:.4f}",
                far=chosen["far"],
                tar=chosen["tar"],
            )
        )
        manifest = result.get("at_manifest_threshold")
        if isinstance(manifest, dict) and abs(manifest["threshold"] - threshold) > 5e-4:
            marks.append(
                CurveMark(
                    f"manifest threshold {manifest['threshold']:.3f}: TAR {manifest['tar']:.4f}, "
                    f"FAR {manifest['far']:.4f}",
                    far=manifest["far"],
                    tar=manifest["tar"],
                )
            )
        models = _describe(pipeline, "lfw")
        plot_roc(
            plot,
            run.scores,
            same,
            marks,
            title=(
                f"LFW {len(run.pairs)} pairs, {models['models']['detector']} + "
                f"{models['models']['embedder']}: accuracy {result['accuracy_mean']:.4f} "
                f"\u00b1 {result['accuracy_std']:.4f}, AUC {result['roc_auc']:.4f}"
            ),
        )
        scores_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            scores_file,
            scores=run.scores.astype(np.float32),
            same=same,
            fold=run.folds,
            genuine=run.scores[same].astype(np.float32),
            impostor=run.scores[~same].astype(np.float32),
        )
        return {
            **result,
            "roc_plot": plot.name,
            "scores_file": scores_file.name,
            "scores_file_note": "arrays scores, same, fold in pairs.txt order (after --folds "
            "and --limit), genuine and impostor; failed pairs score "
            f"{result['scores']['failed_pair_score']}",
            **models,
        }

    result = _with_pipeline(settings, work, load=False)
    _write_json(output, result)
    typer.echo(
        f"accuracy {result['accuracy_mean']:.4f} +- {result['accuracy_std']:.4f}, "
        f"AUC {result['roc_auc']:.4f}, TAR {result['tar_at_far_0.01']:.4f} at FAR 1e-2, "
        f"{result['tar_at_far_0.001']:.4f} at FAR 1e-3, best threshold {result['threshold']:.4f}, "
        f"failures to detect {result['failures_to_detect']} of {result['images']} -> {output}"
    )


@eval_app.command("identify")
def eval_identify(
    limit_people: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Quick subset: the first N people with >= 2 images and the first N with one",
        ),
    ] = None,
    detector: DetectorOption = None,
    embedder: EmbedderOption = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/identify.json"),
    cache_dir: CacheOption = DEFAULT_CACHE,
    no_cache: NoCacheOption = False,
    concurrency: ConcurrencyOption = 4,
    calibration_file: CalibrationOption = None,
) -> None:
    """Open-set 1:N on LFW: rank-1, DIR and FAR at the manifest threshold, DIR at FAR 1e-2/1e-3.

    Enrols the first image of everyone with >= 2 images; people with one image are distractors.
    With a score calibration (the embedder's, from the manifest), also DIR and the measured FAR
    of unknowns at the calibrated identification threshold for this gallery and FAR 1e-2.
    """
    from facesvc.evaluation.identify import lfw_people, run_identify, select_people
    from facesvc.evaluation.lfw import manifest_threshold
    from facesvc.evaluation.progress import ProgressReporter

    settings = _settings(detector, embedder)
    root = settings.data_dir / "lfw" / "lfw-deepfunneled"
    _require(root, "LFW", settings)
    people = select_people(lfw_people(root), limit_people)
    total = sum(len(images) for images in people.values())
    calibration = _load_calibration(settings, calibration_file)

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        cache = _open_cache(pipeline, cache_dir, no_cache)
        try:
            with ProgressReporter("embedding LFW images", total) as progress:
                report = await run_identify(
                    pipeline,
                    root,
                    people,
                    manifest_threshold(pipeline),
                    progress.advance,
                    cache=cache,
                    concurrency=concurrency,
                    skipped=progress.skip,
                    calibration=calibration,
                )
        finally:
            if cache is not None:
                cache.close()
        return {**report, "limit_people": limit_people, **_describe(pipeline, "identify")}

    result = _with_pipeline(settings, work, load=False)
    _write_json(output, result)
    parts = [f"rank-1 {result['rank_1']:.4f}"]
    at = result.get("at_threshold")
    if isinstance(at, dict):
        parts.append(f"DIR {at['dir']:.4f} at FAR {at['far']:.4f} (threshold {at['threshold']})")
    parts += [f"DIR {row['dir']:.4f} at FAR {row['far_target']:g}" for row in result["at_far"]]
    calibrated = result.get("at_calibrated_threshold")
    if isinstance(calibrated, dict):
        parts.append(
            f"calibrated threshold {calibrated['threshold']:.4f} (N {calibrated['gallery_faces']}, "
            f"FAR {calibrated['far_target']:g}): DIR {calibrated['dir']:.4f}, FAR of unknowns "
            f"{calibrated['far']:.4f} measured vs {calibrated['predicted_far']:.4f} predicted"
        )
    typer.echo(", ".join(parts) + f" -> {output}")


@eval_app.command("calibrate")
def eval_calibrate(
    detector: DetectorOption = None,
    embedder: EmbedderOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Calibration file the service loads; default: the embedder's calibration_file "
            "in the manifest, else MODELS_DIR/calibration/SPACE.json",
        ),
    ] = None,
    summary: Annotated[Path, typer.Option("--summary", help="Summary JSON; the plot beside it")] = (
        Path("docs/eval/calibration.json")
    ),
    cache_dir: CacheOption = DEFAULT_CACHE,
    no_cache: NoCacheOption = False,
    concurrency: ConcurrencyOption = 4,
) -> None:
    """Score calibration from all pairs of LFW images: FAR/TAR by threshold, P(same).

    Embeds every LFW image, scores all ~8.7e7 pairs (genuine: same person; impostor: two
    people), writes the calibration file, a summary (thresholds at FAR 1e-2..1e-7,
    identification thresholds by gallery size) and STEM.png (score histograms, FAR/TAR).
    """
    from facesvc.evaluation.cache import pipeline_keys
    from facesvc.evaluation.calibrate import (
        calibrate_embedded,
        calibration_summary,
        pair_count,
        plot_calibration,
    )
    from facesvc.evaluation.identify import lfw_people
    from facesvc.evaluation.lfw import embed_faces, manifest_threshold
    from facesvc.evaluation.progress import ProgressReporter
    from facesvc.inference.manifest import Manifest

    try:  # fail now, not after the images are embedded
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise fail("the plot needs matplotlib: pip install matplotlib", 2) from exc
    settings = _settings(detector, embedder)
    root = settings.data_dir / "lfw" / "lfw-deepfunneled"
    _require(root, "LFW", settings)
    names = [image for images in lfw_people(root).values() for image in images]
    total = len(names)
    spec = Manifest.load(settings.manifest_path).get(settings.embedder, "embedder")
    target = output or spec.calibration_path(settings.models_dir)
    target = target or settings.models_dir / "calibration" / f"{spec.embedding_space}.json"
    plot = summary.with_name(f"{summary.stem}.png")

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        cache = _open_cache(pipeline, cache_dir, no_cache)
        try:
            with ProgressReporter("embedding LFW images", total) as progress:
                embedded = await embed_faces(
                    pipeline,
                    root,
                    names,
                    progress.advance,
                    concurrency,
                    cache=cache,
                    skipped=progress.skip,
                )
        finally:
            if cache is not None:
                cache.close()
        described = _describe(pipeline, "calibrate")
        detector_key, embedder_key = pipeline_keys(pipeline)
        provenance = {
            "command": described["command"],
            "date": described["date"],
            "models": described["models"],
            "pipeline": {"detector": detector_key, "embedder": embedder_key},
        }
        pairs = pair_count(sum(embedded.faces[name].embedding is not None for name in names))
        with ProgressReporter("scoring all pairs", pairs) as progress:
            run = calibrate_embedded(
                embedded,
                names,
                progress.advance,
                space=spec.embedding_space,
                provenance=provenance,
            )
        threshold = manifest_threshold(pipeline)
        models = described["models"]
        plot_calibration(
            plot,
            run.calibration,
            run.histograms,
            manifest_threshold=threshold,
            title=(
                f"LFW all pairs ({run.calibration.n_genuine:,} genuine, "
                f"{run.calibration.n_impostor:,} impostor), {models['detector']} + "
                f"{models['embedder']}"
            ),
        )
        run.calibration.save(target)
        return {
            "calibration_file": _display_path(target),
            "plot": plot.name,
            **calibration_summary(run, manifest_threshold=threshold),
            **{key: value for key, value in run.report.items() if key != "models"},
            **described,
        }

    result = _with_pipeline(settings, work, load=False)
    _write_json(summary, result)
    rows = {row["far"]: row for row in result["at_far"]}
    ident = {row["gallery_faces"]: row for row in result["identification_at_far"]}
    typer.echo(
        f"{result['n_genuine']:,} genuine and {result['n_impostor']:,} impostor pairs; threshold "
        f"{rows[1e-3]['threshold']:.4f} at FAR 1e-3, {rows[1e-4]['threshold']:.4f} at 1e-4, "
        f"{rows[1e-5]['threshold']:.4f} at 1e-5; 1:N at FAR 1% "
        + ", ".join(f"N={n:,}: {row['threshold']:.4f}" for n, row in ident.items())
        + f"; P(same) = 1/(1+exp(-({result['logistic']['a']:.2f} s "
        f"{result['logistic']['b']:+.2f}))) -> {target}, {summary}"
    )


@eval_app.command("landmarks")
def eval_landmarks(
    limit: Annotated[
        int | None, typer.Option(min=1, help="Quick subset: the first N images")
    ] = None,
    detector: DetectorOption = None,
    min_iou: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="A detection must overlap the labelled box more than this"
        ),
    ] = 0.0,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/landmarks.json"),
    concurrency: ConcurrencyOption = 4,
) -> None:
    """Five-point landmark error on cuhk_5pt: NME (inter-ocular), median, failures (> 0.1)."""
    from facesvc.evaluation.landmarks import run_landmarks
    from facesvc.evaluation.progress import ProgressReporter
    from facesvc.inference.cuhk import read_cuhk

    settings = _settings(detector)
    root = settings.data_dir / "cuhk_5pt"
    _require(root / "testImageList.txt", "cuhk_5pt", settings)
    samples = read_cuhk(root / "testImageList.txt")[:limit]

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        with ProgressReporter("cuhk_5pt landmarks", len(samples)) as progress:
            report = await run_landmarks(
                pipeline,
                root,
                samples,
                progress.advance,
                min_iou=min_iou,
                concurrency=concurrency,
            )
        five_points = "detector" if pipeline.registry.detector_gives_five_points else "face mesh"
        return {**report, "five_points_from": five_points, **_describe(pipeline, "landmarks")}

    result = _with_pipeline(settings, work)
    _write_json(output, result)
    typer.echo(
        f"NME mean {result['nme_mean']:.4f}, median {result['nme_median']:.4f}, "
        f"failures (> {result['failure_threshold']}) {result['failure_rate']:.2%}, "
        f"detection misses {result['detection_misses']} of {result['images']} -> {output}"
    )


@eval_app.command("detect")
def eval_detect(
    detector: DetectorOption = None,
    min_iou: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/detect.json"),
) -> None:
    """Detection recall and precision at IoU >= 0.5 on dlib's labelled photos; dogs.jpg: 0."""
    from facesvc.evaluation.detection import parse_imglab, run_detection
    from facesvc.evaluation.progress import ProgressReporter

    settings = _settings(detector)
    root = settings.data_dir / "dlib_faces"
    _require(root / "training.xml", "dlib_faces", settings)
    labelled = [
        image
        for name in ("training.xml", "testing.xml")
        for image in parse_imglab((root / name).read_text(encoding="iso-8859-1"))
    ]
    known = {image.file for image in labelled}
    unlabelled = sorted(p.name for p in root.glob("*.jpg") if p.name not in known)

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        with ProgressReporter("dlib photos", len(labelled) + len(unlabelled)) as progress:
            report = await run_detection(
                pipeline, root, labelled, unlabelled, progress.advance, min_iou=min_iou
            )
        return {**report, **_describe(pipeline, "detect")}

    result = _with_pipeline(settings, work)
    _write_json(output, result)
    typer.echo(
        f"recall {result['recall']:.4f}, precision {result['precision']:.4f} "
        f"({result['true_positives']} of {result['labelled_faces']} faces, "
        f"{result['false_positives']} false), dogs.jpg faces: "
        f"{result['no_face_images'].get('dogs.jpg')} -> {output}"
    )


@eval_app.command("liveness")
def eval_liveness(
    rebuild_set: Annotated[
        bool,
        typer.Option(
            "--rebuild-set",
            help="Build the session set again from the labels and seed (and "
            "write it to --set) instead of running the committed one",
        ),
    ] = False,
    session_set: Annotated[
        Path, typer.Option("--set", help="Sessions: kind, challenges, frames as LFW file names")
    ] = Path("docs/eval/liveness_set.json"),
    labels: Annotated[
        Path, typer.Option("--labels", help="Photos judged by eye (closed eyes, open mouths)")
    ] = Path("docs/eval/liveness_labels.json"),
    seed: Annotated[int, typer.Option(help="With --rebuild-set: the set's random seed")] = 15,
    draws: Annotated[
        int, typer.Option(min=1, help="With --rebuild-set: challenge lists drawn")
    ] = 1200,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Quick subset: the first N genuine sessions")
    ] = None,
    max_frames: Annotated[int, typer.Option(min=2, help="A session's frame budget")] = 30,
    detector: DetectorOption = None,
    embedder: EmbedderOption = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/liveness.json"),
    cache_dir: CacheOption = DEFAULT_CACHE,
    no_cache: NoCacheOption = False,
    concurrency: ConcurrencyOption = 4,
) -> None:
    """Active liveness: the mesh signals on all of LFW, then genuine sessions and attacks.

    Measures every LFW photo's centre face (eye and mouth openness, yaw, embedding; cached),
    then runs each session of the set frame by frame through the service's own frame
    analysis and rules: genuine pass rate, attack pass rate per kind, with reasons.
    """
    from facesvc.evaluation.identify import lfw_people
    from facesvc.evaluation.liveness import (
        Labels,
        SessionSpec,
        SignalCache,
        build_session_set,
        challenge_photo_jitter,
        cpu_description,
        liveness_report,
        measure_photos,
        run_sessions,
        signals_key,
        similarity_sweep,
        write_session_set,
    )
    from facesvc.evaluation.progress import ProgressReporter
    from facesvc.services.liveness.checker import LivenessChecker, LivenessThresholds

    settings = _settings(detector, embedder)
    root = settings.data_dir / "lfw" / "lfw-deepfunneled"
    _require(root, "LFW", settings)
    names = [image for images in lfw_people(root).values() for image in images]
    try:
        marks = Labels.load(labels)
    except (OSError, KeyError, ValueError) as exc:
        raise fail(f"{labels}: {exc}", 2) from exc

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        from facesvc.evaluation.lfw import manifest_threshold

        threshold = manifest_threshold(pipeline)
        if threshold is None:
            raise fail("the embedder has no match threshold (set FACESVC_MATCH_THRESHOLD)", 2)
        cache = None
        if not no_cache:
            cache = SignalCache(cache_dir / "face_signals.sqlite", signals_key(pipeline))
        try:
            with ProgressReporter("measuring LFW faces", len(names)) as progress:
                photos = await measure_photos(
                    pipeline,
                    root,
                    names,
                    cache,
                    progress=progress.advance,
                    skipped=progress.skip,
                    concurrency=concurrency,
                )
        finally:
            if cache is not None:
                cache.close()
        if rebuild_set:
            built = build_session_set(photos, marks, seed=seed, draws=draws, max_frames=max_frames)
            write_session_set(session_set, {"labels": _display_path(labels), **built})
        raw = json.loads(session_set.read_text(encoding="utf-8"))
        sessions = [SessionSpec.from_json(s) for s in raw["sessions"]]
        missing = sorted(
            {f.file for s in sessions for f in s.frames if not (root / f.file).is_file()}
        )
        if missing:
            raise fail(f"{len(missing)} photos of the set are not in {root}: {missing[:3]}", 2)
        if limit is not None:
            genuine = {s.id for s in sessions if s.kind == "genuine"}
            kept = set(sorted(genuine)[:limit])
            sessions = [s for s in sessions if (s.of or s.id) in kept]
        # as the service checks it: never below the 1:1 threshold
        same_person = max(threshold, settings.liveness_min_similarity)
        checker = LivenessChecker(LivenessThresholds(), same_person, max_frames)
        with ProgressReporter("liveness sessions", len(sessions)) as progress:
            outcomes, observer = await run_sessions(
                pipeline, root, sessions, checker, progress=progress.advance
            )
        with ProgressReporter("still copies of challenge photos", 60) as progress:
            spreads = await challenge_photo_jitter(
                root, sessions, observer, progress=progress.advance
            )
        sweep = await similarity_sweep(pipeline, root, sessions, checker, observer)
        described = _describe(pipeline, "liveness")
        described["models"]["mesh_version"] = pipeline.registry.mesh_spec.version
        described["machine"].update(cpu_description())
        described["machine"]["inference_threads"] = settings.inference_threads
        return {
            "set": _display_path(session_set),
            "labels": _display_path(labels),
            "limit": limit,
            **liveness_report(photos, marks, sessions, outcomes, observer, checker, spreads),
            "stricter_same_person": sweep,
            **described,
        }

    result = _with_pipeline(settings, work, load=False)
    _write_json(output, result)
    genuine, attacks = result["genuine"], result["attacks"]
    typer.echo(
        f"genuine {genuine['passed']}/{genuine['sessions']} passed ({genuine['pass_rate']:.1%}); "
        "attacks passed: "
        + ", ".join(f"{kind} {row['passed']}/{row['sessions']}" for kind, row in attacks.items())
        + f"; {result['timing']['ms_per_frame_median']} ms per frame (median) -> {output}"
    )


@eval_app.command("quality")
def eval_quality(
    pairs_per_fold: Annotated[
        int,
        typer.Option(min=1, max=300, help="Genuine pairs per fold to degrade (size and blur)"),
    ] = 20,
    pose_folds: Annotated[
        int, typer.Option(min=1, max=10, help="Folds whose genuine pairs measure pose")
    ] = 10,
    target: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="TAR under which a property fails")
    ] = 0.95,
    detector: DetectorOption = None,
    embedder: EmbedderOption = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/quality.json"),
    concurrency: ConcurrencyOption = 4,
) -> None:
    """Enrolment quality gate: size, sharpness and pose thresholds from LFW genuine pairs.

    TAR at the match threshold as faces get smaller, blurrier or turned; each threshold is
    where it falls below --target. Beside OUTPUT: STEM.png (the curves, thresholds marked)
    and STEM.npz (every comparison).
    """
    import numpy as np

    from facesvc.evaluation.lfw import manifest_threshold
    from facesvc.evaluation.progress import ProgressReporter
    from facesvc.evaluation.quality import (
        images_to_measure,
        plot_quality,
        quality_report,
        run_quality,
    )

    try:  # fail now, not after the images are measured
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise fail("the plot needs matplotlib: pip install matplotlib", 2) from exc
    settings = _settings(detector, embedder)
    _require(settings.data_dir / "lfw" / "pairs.txt", "LFW", settings)
    total = images_to_measure(pairs_per_fold, pose_folds, settings.data_dir)

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        threshold = manifest_threshold(pipeline)
        if threshold is None:
            raise fail("the embedder has no match threshold (set FACESVC_MATCH_THRESHOLD)", 2)
        with ProgressReporter("measuring LFW faces", total) as progress:
            run = await run_quality(
                pipeline,
                settings.data_dir,
                threshold,
                per_fold=pairs_per_fold,
                pose_folds=pose_folds,
                progress=progress.advance,
                concurrency=concurrency,
            )
        report = quality_report(run, target)
        models = _describe(pipeline, "quality")
        plot = output.with_suffix(".png")
        samples_file = output.with_suffix(".npz")
        plot_quality(
            plot,
            report,
            title=(
                f"Enrolment quality, {models['models']['detector']} + "
                f"{models['models']['embedder']}: LFW genuine pairs, TAR at cosine >= "
                f"{threshold:g}; thresholds where TAR < {target:.0%}"
            ),
        )
        arrays: dict[str, Any] = {**run.samples.arrays(), **run.pose.arrays()}
        np.savez_compressed(samples_file, **arrays)
        return {
            **report,
            "plot": plot.name,
            "samples_file": samples_file.name,
            "timing": {"seconds": round(run.seconds, 1), "photos_measured": total},
            **models,
        }

    result = _with_pipeline(settings, work)
    _write_json(output, result)
    chosen = result["thresholds"]
    typer.echo(
        f"face >= {chosen['min_face_size_px']:g} px, sharpness >= {chosen['min_sharpness']:g}, "
        f"|yaw| <= {chosen['max_yaw_deg']:g} deg, |pitch| <= {chosen['max_pitch_deg']:g} deg "
        f"(TAR at {result['match_threshold']:g} >= {target:g}); LFW originals rejected "
        f"{result['gate_on_lfw_originals']['rejected']:.2%} -> {output}"
    )


@eval_app.command("attributes")
def eval_attributes(
    labels: Annotated[
        Path,
        typer.Option(
            "--labels", help="Labelled LFW photos: file (under the LFW folder), gender, age ..."
        ),
    ] = Path("docs/eval/attributes_set.csv"),
    limit: Annotated[int | None, typer.Option(min=1, help="Quick subset: the first N")] = None,
    detector: DetectorOption = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/attributes.json"),
) -> None:
    """Age, gender and expression on labelled LFW photos: gender accuracy, age error by age
    band, expression agreement with hand labels, ms per face."""
    from facesvc.evaluation.attributes import (
        attributes_report,
        cpu_description,
        predict_all,
        read_attribute_set,
    )
    from facesvc.evaluation.progress import ProgressReporter

    settings = _settings(detector).model_copy(update={"attributes": True})
    root = settings.data_dir / "lfw"
    _require(root / "lfw-deepfunneled", "LFW", settings)
    if not labels.exists():
        raise fail(f"{labels} not found", 2)
    try:
        samples = read_attribute_set(labels)[:limit]
    except (KeyError, ValueError) as exc:
        raise fail(f"{labels}: {exc}", 2) from exc

    async def work(pipeline: FacePipeline) -> dict[str, Any]:
        with ProgressReporter("LFW attributes", len(samples)) as progress:
            predictions = await predict_all(pipeline, root, samples, progress.advance)
        described = _describe(pipeline, "attributes")
        described["models"]["attributes"] = {
            task: spec.version for task, spec in pipeline.registry.attribute_specs.items()
        }
        described["machine"].update(cpu_description())
        return {
            "labels": _display_path(labels),
            "limit": limit,
            "age_labels": "2003 minus the birth year (LFW's news photos are of about 2002-2004)",
            **attributes_report(pipeline, predictions),
            **described,
        }

    result = _with_pipeline(settings, work)
    _write_json(output, result)
    timing = result["timing"]["attribute_stage_ms_per_face"]
    typer.echo(
        f"gender accuracy {result['gender']['accuracy']:.4f} ({result['gender']['faces']} "
        f"faces), age MAE {result['age']['mae']:.1f} years, expression agreement "
        f"{result['expression']['agreement']:.3f} ({result['expression']['faces_labelled']} "
        f"labelled), {timing['median']:.1f} ms per face (median) -> {output}"
    )
