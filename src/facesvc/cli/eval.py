"""``facesvc eval ...``: evaluations on public data through the service's own pipeline.

Every command loads the configured models exactly as the service does (``--detector`` picks
another manifest detector), runs its evaluation (``evaluate_<name>`` in the evaluation's module,
e.g. evaluation/lfw.py), writes the JSON report (plots and raw scores beside it) and prints a
one-line summary. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from facesvc.cli._support import fail
from facesvc.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from facesvc.inference.calibration import ScoreCalibration
    from facesvc.inference.pipeline import FacePipeline

Report = dict[str, Any]

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


def _require(path: Path, what: str, settings: Settings) -> None:
    if not path.exists():
        raise fail(f"{what} not found at {path} (set FACESVC_DATA_DIR; now {settings.data_dir})", 2)


def _need_matplotlib(what: str) -> None:
    """Fail now, not after the images are embedded."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise fail(f"{what} needs matplotlib: pip install matplotlib", 2) from exc


def _with_pipeline(
    settings: Settings,
    evaluation: Callable[[FacePipeline], Awaitable[Report]],
    *,
    load: bool = True,
) -> Report:
    """Load, warm and close the models around ``evaluation`` (the service's registry and
    pipeline); an input it cannot use exits 2, a missing model file 1.

    With ``load=False`` the models load only when ``evaluation`` needs them (the embedding
    cache answers everything on a rerun)."""
    import asyncio

    from facesvc.evaluation import EvaluationError
    from facesvc.inference.pipeline import FacePipeline, PipelineLimits
    from facesvc.inference.registry import ModelFileError, ModelRegistry

    async def main() -> Report:
        registry = ModelRegistry(settings)
        try:
            if load:
                await registry.start()
            return await evaluation(FacePipeline(registry, PipelineLimits.from_settings(settings)))
        finally:
            registry.close()

    try:
        return asyncio.run(main())
    except EvaluationError as exc:
        raise fail(str(exc), 2) from exc
    except ModelFileError as exc:
        raise fail(str(exc)) from exc


def _command(name: str) -> str:
    """The command line that reproduces this run, as ``facesvc eval NAME ...``."""
    argv = sys.argv[1:]
    rest = argv[argv.index(name) + 1 :] if name in argv else []
    return shlex.join(["facesvc", "eval", name, *rest])


def _report(output: Path, result: Report, line: str, *, written: str | None = None) -> None:
    """Write ``result`` to ``output``; print ``line -> `` what was written (default: output)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"{line} -> {written or output}")


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
    from facesvc.evaluation.lfw import evaluate_lfw, lfw_summary_line

    _need_matplotlib("the ROC plot")
    settings = _settings(detector, embedder)
    _require(settings.data_dir / "lfw" / "pairs.txt", "LFW", settings)
    evaluation = partial(
        evaluate_lfw,
        data_dir=settings.data_dir,
        folds=folds,
        limit=limit,
        output=output,
        cache_dir=None if no_cache else cache_dir,
        concurrency=concurrency,
        command=_command("lfw"),
    )
    result = _with_pipeline(settings, evaluation, load=False)
    _report(output, result, lfw_summary_line(result))


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
    from facesvc.evaluation.identify import evaluate_identification, identification_summary_line

    settings = _settings(detector, embedder)
    _require(settings.data_dir / "lfw" / "lfw-deepfunneled", "LFW", settings)
    evaluation = partial(
        evaluate_identification,
        data_dir=settings.data_dir,
        limit_people=limit_people,
        calibration=_load_calibration(settings, calibration_file),
        cache_dir=None if no_cache else cache_dir,
        concurrency=concurrency,
        command=_command("identify"),
    )
    result = _with_pipeline(settings, evaluation, load=False)
    _report(output, result, identification_summary_line(result))


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
    from facesvc.evaluation.calibrate import calibration_summary_line, evaluate_calibration
    from facesvc.inference.manifest import Manifest

    _need_matplotlib("the plot")
    settings = _settings(detector, embedder)
    _require(settings.data_dir / "lfw" / "lfw-deepfunneled", "LFW", settings)
    spec = Manifest.load(settings.manifest_path).get(settings.embedder, "embedder")
    target = output or spec.calibration_path(settings.models_dir)
    target = target or settings.models_dir / "calibration" / f"{spec.embedding_space}.json"
    evaluation = partial(
        evaluate_calibration,
        data_dir=settings.data_dir,
        space=spec.embedding_space,
        target=target,
        plot=summary.with_name(f"{summary.stem}.png"),
        cache_dir=None if no_cache else cache_dir,
        concurrency=concurrency,
        command=_command("calibrate"),
    )
    result = _with_pipeline(settings, evaluation, load=False)
    _report(summary, result, calibration_summary_line(result), written=f"{target}, {summary}")


@eval_app.command("scale")
def eval_scale(
    embedder: EmbedderOption = None,
    far: Annotated[
        float, typer.Option(min=1e-6, max=0.5, help="FPIR target (FACESVC_IDENTIFY_FAR)")
    ] = 0.01,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/identify_scale.json"),
    calibration_file: CalibrationOption = None,
) -> None:
    """1:N by gallery size (1e3..1e7 faces) from the embedder's score calibration: the
    threshold that keeps FPIR at FAR, the FPIR actually kept, expected DIR, rank-1 and rank-10.

    No model is loaded: the LFW score distributions in the calibration answer it.
    """
    from facesvc.evaluation.scale import identification_at_scale, scale_summary_line
    from facesvc.inference.manifest import Manifest

    settings = _settings(None, embedder)
    calibration = _load_calibration(settings, calibration_file)
    if calibration is None:
        raise fail("no score calibration: run `facesvc eval calibrate` first", 2)
    spec = Manifest.load(settings.manifest_path).get(settings.embedder, "embedder")
    threshold = settings.match_threshold
    if threshold is None:
        threshold = spec.threshold if spec.threshold is not None else -1.0
    result = identification_at_scale(calibration, threshold, far)
    result["command"] = _command("scale")
    _report(output, result, scale_summary_line(result))


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
    from facesvc.evaluation.landmarks import evaluate_landmarks, landmarks_summary_line
    from facesvc.inference.cuhk import read_cuhk

    settings = _settings(detector)
    root = settings.data_dir / "cuhk_5pt"
    _require(root / "testImageList.txt", "cuhk_5pt", settings)
    evaluation = partial(
        evaluate_landmarks,
        root=root,
        samples=read_cuhk(root / "testImageList.txt")[:limit],
        min_iou=min_iou,
        concurrency=concurrency,
        command=_command("landmarks"),
    )
    result = _with_pipeline(settings, evaluation)
    _report(output, result, landmarks_summary_line(result))


@eval_app.command("detect")
def eval_detect(
    detector: DetectorOption = None,
    min_iou: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("docs/eval/detect.json"),
) -> None:
    """Detection recall and precision at IoU >= 0.5 on dlib's labelled photos; dogs.jpg: 0."""
    from facesvc.evaluation.detection import (
        detection_summary_line,
        evaluate_detection,
        read_dlib_faces,
    )

    settings = _settings(detector)
    root = settings.data_dir / "dlib_faces"
    _require(root / "training.xml", "dlib_faces", settings)
    labelled, unlabelled = read_dlib_faces(root)
    evaluation = partial(
        evaluate_detection,
        root=root,
        labelled=labelled,
        unlabelled=unlabelled,
        min_iou=min_iou,
        command=_command("detect"),
    )
    result = _with_pipeline(settings, evaluation)
    _report(output, result, detection_summary_line(result))


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
    from facesvc.evaluation.liveness.evaluate import evaluate_liveness, liveness_summary_line
    from facesvc.evaluation.liveness.sessions import Labels

    settings = _settings(detector, embedder)
    _require(settings.data_dir / "lfw" / "lfw-deepfunneled", "LFW", settings)
    try:
        marks = Labels.load(labels)
    except (OSError, KeyError, ValueError) as exc:
        raise fail(f"{labels}: {exc}", 2) from exc
    evaluation = partial(
        evaluate_liveness,
        data_dir=settings.data_dir,
        labels=marks,
        labels_file=labels,
        session_set=session_set,
        rebuild_set=rebuild_set,
        seed=seed,
        draws=draws,
        limit=limit,
        max_frames=max_frames,
        cache_dir=None if no_cache else cache_dir,
        concurrency=concurrency,
        command=_command("liveness"),
    )
    result = _with_pipeline(settings, evaluation, load=False)
    _report(output, result, liveness_summary_line(result))


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
    from facesvc.evaluation.quality import evaluate_quality, quality_summary_line

    _need_matplotlib("the plot")
    settings = _settings(detector, embedder)
    _require(settings.data_dir / "lfw" / "pairs.txt", "LFW", settings)
    evaluation = partial(
        evaluate_quality,
        data_dir=settings.data_dir,
        pairs_per_fold=pairs_per_fold,
        pose_folds=pose_folds,
        target=target,
        output=output,
        concurrency=concurrency,
        command=_command("quality"),
    )
    result = _with_pipeline(settings, evaluation)
    _report(output, result, quality_summary_line(result, target))


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
        attributes_summary_line,
        evaluate_attributes,
        read_attribute_set,
    )

    settings = _settings(detector).model_copy(update={"attributes": True})
    root = settings.data_dir / "lfw"
    _require(root / "lfw-deepfunneled", "LFW", settings)
    if not labels.exists():
        raise fail(f"{labels} not found", 2)
    try:
        samples = read_attribute_set(labels)[:limit]
    except (KeyError, ValueError) as exc:
        raise fail(f"{labels}: {exc}", 2) from exc
    evaluation = partial(
        evaluate_attributes,
        root=root,
        samples=samples,
        labels_file=labels,
        limit=limit,
        command=_command("attributes"),
    )
    result = _with_pipeline(settings, evaluation)
    _report(output, result, attributes_summary_line(result))
