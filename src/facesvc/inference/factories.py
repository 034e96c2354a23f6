"""What loads each kind of model: a table from (task, architecture), and the runtime where it
picks another class, to a constructor (InsightFace-REST's ``func_map``), with whether the kind
stays on the CPU.

A constructor verifies the model's file (its sha256: blocking I/O) and returns what loads the
model; the registry calls that on the model's runner thread. A new architecture is one entry in
``FACTORIES``; a new task also needs its slot in the registry (batching, warm-up batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from facesvc.inference.devices import worker_plan
from facesvc.inference.manifest import Architecture, ModelSpec, Runtime, Task, sha256_file
from facesvc.inference.pull import expected_sha256
from facesvc.settings import Settings

if TYPE_CHECKING:
    from facesvc.inference.runtimes.openvino import Precision as OpenVINOPrecision

log = logging.getLogger(__name__)

# Loads the model (a Predictor); called on the model's runner thread.
Loader = Callable[[], Any]
# (manifest entry, settings, the runner's TensorFlow device) -> the loader, file verified
Constructor = Callable[[ModelSpec, Settings, str], Loader]

ATTRIBUTE_TASKS: tuple[Task, ...] = ("age", "gender", "expression")


class ModelFileError(RuntimeError):
    pass


def _verified_path(spec: ModelSpec, models_dir: Path) -> Path:
    path = spec.path(models_dir)
    if path is None:
        raise ModelFileError(f"model {spec.name!r} names no file")
    if not path.exists():
        raise ModelFileError(f"{path} is missing: run `facesvc models pull`")
    want = expected_sha256(spec, models_dir)
    if want is None:
        log.warning("model %s: no sha256 to check %s against", spec.name, path)
    elif sha256_file(path) != want:
        raise ModelFileError(f"{path} does not match its sha256: run `facesvc models pull`")
    return path


def model_threads(settings: Settings) -> int:
    """Threads per model in this worker (FACESVC_INFERENCE_THREADS, else the usable cores
    shared out among FACESVC_WORKERS workers)."""
    return worker_plan(settings.workers, settings.inference_threads).threads


def _precision(spec: ModelSpec) -> OpenVINOPrecision:
    precision = spec.options.get("precision", "f32")
    if precision not in ("f32", "bf16"):
        raise ValueError(f"{spec.name}: precision {precision!r} is not f32 or bf16")
    return precision  # type: ignore[no-any-return]


def _blazeface(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.detectors.blazeface import BlazeFaceDetector

    min_score = settings.detection_min_score
    threads = model_threads(settings)
    path = _verified_path(spec, settings.models_dir)
    variant = str(spec.options.get("variant", "full"))
    runtime: Literal["tflite", "openvino"] = (
        "openvino" if spec.resolved_runtime == "openvino" else "tflite"
    )
    precision = _precision(spec)
    return lambda: BlazeFaceDetector(
        path, variant, min_score=min_score, threads=threads, runtime=runtime, precision=precision
    )


def _ssd(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.detectors.ssd import SSDGraphDetector

    min_score = settings.detection_min_score
    path = _verified_path(spec, settings.models_dir)
    t = spec.tensors
    return lambda: SSDGraphDetector(
        path,
        image_tensor=t.get("image", "image_tensor:0"),
        boxes=t.get("boxes", "detection_boxes:0"),
        scores=t.get("scores", "detection_scores:0"),
        count=t.get("count", "num_detections:0"),
        min_score=min_score,
    )


def _mtcnn(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.detectors.mtcnn import MTCNNDetector

    min_score = settings.detection_min_score
    return lambda: MTCNNDetector(device, min_score=min_score)


def _facenet_file(spec: ModelSpec, settings: Settings) -> tuple[Path, int, Any]:
    """FaceNet's verified file, input size and preprocessing, whatever runs it."""
    path = _verified_path(spec, settings.models_dir)
    return (
        path,
        int(spec.options.get("input_size", 160)),
        spec.options.get("preprocessing", "prewhiten"),
    )


def _facenet_graph(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.embedders.facenet import FaceNetEmbedder

    path, size, preprocessing = _facenet_file(spec, settings)
    t = spec.tensors
    phase_train = t.get("phase_train", "phase_train:0") or None
    return lambda: FaceNetEmbedder(
        path,
        input_name=t.get("input", "input:0"),
        output_name=t.get("embeddings", "embeddings:0"),
        phase_train_name=phase_train,
        input_size=size,
        preprocessing=preprocessing,
    )


def _facenet_tflite(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.embedders.facenet import TFLiteFaceNetEmbedder

    path, size, preprocessing = _facenet_file(spec, settings)
    threads = model_threads(settings)
    return lambda: TFLiteFaceNetEmbedder(
        path, input_size=size, preprocessing=preprocessing, threads=threads
    )


def _facenet_openvino(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.embedders.facenet import OpenVINOFaceNetEmbedder

    path, size, preprocessing = _facenet_file(spec, settings)
    threads = model_threads(settings)
    precision = _precision(spec)
    return lambda: OpenVINOFaceNetEmbedder(
        path, input_size=size, preprocessing=preprocessing, threads=threads, precision=precision
    )


def _operator_onnx(
    spec: ModelSpec,
    settings: Settings,
    what: str,
    contract_of: Callable[[dict[str, Any]], Any],
    model: Callable[..., Any],
) -> Loader:
    """An operator's own model (an embedder, an antispoof model): an ONNX file whose sha256
    the manifest entry gives, with the input contract its options set."""
    if spec.resolved_runtime != "onnxruntime":
        raise ModelFileError(f"{spec.name}: {what} must be an ONNX file")
    if not spec.sha256:
        raise ModelFileError(f"{spec.name}: give the file's sha256 in the manifest entry")
    contract = contract_of(spec.options)
    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    return lambda: model(path, contract, threads=threads)


def _arcface(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.embedders.onnx import EmbedderContract, OnnxEmbedder

    return _operator_onnx(
        spec, settings, "an arcface embedder", EmbedderContract.from_options, OnnxEmbedder
    )


def _facemesh(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.landmarks.facemesh import FaceMeshModel

    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    return lambda: FaceMeshModel(path, threads=threads)


def _dlib_network(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.attributes.models import DlibFaceNetwork

    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    size = int(spec.options["input_size"])
    means = [float(v) for v in spec.options["channel_means"]]
    return lambda: DlibFaceNetwork(path, size, means, threads=threads)


def _mini_xception(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.attributes.models import ExpressionNetwork

    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    return lambda: ExpressionNetwork(path, threads=threads)


def _minifasnet(spec: ModelSpec, settings: Settings, device: str) -> Loader:
    from facesvc.inference.antispoof import AntispoofContract, AntispoofModel

    return _operator_onnx(
        spec, settings, "an antispoof model", AntispoofContract.from_options, AntispoofModel
    )


@dataclass(frozen=True)
class ModelKind:
    construct: Constructor
    # True: the wrapper has no TensorFlow path, whatever the file (BlazeFace, FaceMesh). Any
    # model in a TFLite, OpenVINO (CPU plugin) or ONNX Runtime file stays on the CPU too
    # (runs_on_cpu_only).
    cpu_only: bool = False


# (task, architecture, runtime): a runtime of None is the entry for any runtime that has no
# entry of its own.
FACTORIES: dict[tuple[Task, Architecture, Runtime | None], ModelKind] = {
    ("detector", "blazeface", None): ModelKind(_blazeface, cpu_only=True),
    ("detector", "ssd", None): ModelKind(_ssd),
    ("detector", "mtcnn", None): ModelKind(_mtcnn),
    ("embedder", "facenet", "tflite"): ModelKind(_facenet_tflite),
    ("embedder", "facenet", "openvino"): ModelKind(_facenet_openvino),
    ("embedder", "facenet", None): ModelKind(_facenet_graph),
    ("embedder", "arcface", None): ModelKind(_arcface),
    ("mesh", "facemesh", None): ModelKind(_facemesh, cpu_only=True),
    ("age", "dlib-age", None): ModelKind(_dlib_network),
    ("gender", "dlib-gender", None): ModelKind(_dlib_network),
    ("expression", "mini-xception", None): ModelKind(_mini_xception),
    ("antispoof", "minifasnet", None): ModelKind(_minifasnet),
}


def _find(spec: ModelSpec) -> ModelKind | None:
    exact = FACTORIES.get((spec.task, spec.architecture, spec.resolved_runtime))
    return exact or FACTORIES.get((spec.task, spec.architecture, None))


def model_kind(spec: ModelSpec) -> ModelKind:
    kind = _find(spec)
    if kind is None:
        noun = "attribute" if spec.task in ATTRIBUTE_TASKS else spec.task
        article = "an" if noun[0] in "aeiou" else "a"
        raise ValueError(f"{spec.name}: {spec.architecture} is not {article} {noun} architecture")
    return kind


def runs_on_cpu_only(spec: ModelSpec) -> bool:
    """The model stays on the CPU whatever FACESVC_DEVICE says (its kind or its runtime has
    no GPU path here)."""
    kind = _find(spec)
    return (kind is not None and kind.cpu_only) or spec.resolved_runtime != "tensorflow"


def model_factory(spec: ModelSpec, settings: Settings, device: str = "/CPU:0") -> Loader:
    """What loads one manifest model (verified first): the runners' factories, also used by
    benchmarks that load a single model."""
    return model_kind(spec).construct(spec, settings, device)
