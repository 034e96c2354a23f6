"""The model registry: manifest name -> spec -> loaded, warmed model behind its runner."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from facesvc.inference.antispoof import AntispoofContract
from facesvc.inference.batching import ArrayBatching, BatchPolicy, ListBatching
from facesvc.inference.calibration import ScoreCalibration
from facesvc.inference.devices import configure_tensorflow, worker_plan
from facesvc.inference.embedders.onnx import EmbedderContract
from facesvc.inference.geometry import CropPolicy
from facesvc.inference.manifest import Manifest, ModelSpec, Task, sha256_file
from facesvc.inference.pull import expected_sha256
from facesvc.inference.runner import ModelRunner, Predictor
from facesvc.inference.runtimes import choose_variant
from facesvc.inference.types import Box, Detection
from facesvc.settings import Settings

if TYPE_CHECKING:
    from facesvc.inference.runtimes.openvino import Precision as OpenVINOPrecision

log = logging.getLogger(__name__)

DetectorRunner = ModelRunner[list[np.ndarray], list[list[Detection]]]
MeshRunner = ModelRunner[list[tuple[np.ndarray, Detection]], list[np.ndarray]]
EmbedderRunner = ModelRunner[np.ndarray, np.ndarray]
# Age, gender, expression: crops in, class probabilities out.
AttributeRunner = ModelRunner[np.ndarray, np.ndarray]

# The embedder FACESVC_DEVICE=gpu loads unless FACESVC_EMBEDDER says otherwise.
GPU_EMBEDDER = "facenet"

# TFLite and OpenVINO (CPU plugin) models have no GPU path here: they stay on the CPU
# whatever FACESVC_DEVICE says.
_CPU_ONLY = {"blazeface", "facemesh"}


def _cpu_only(spec: ModelSpec) -> bool:
    return spec.architecture in _CPU_ONLY or spec.resolved_runtime != "tensorflow"


def _precision(spec: ModelSpec) -> OpenVINOPrecision:
    precision = spec.options.get("precision", "f32")
    if precision not in ("f32", "bf16"):
        raise ValueError(f"{spec.name}: precision {precision!r} is not f32 or bf16")
    return precision  # type: ignore[no-any-return]


_RUNTIME_NAMES = {
    "tensorflow": "TensorFlow",
    "tflite": "TFLite",
    "openvino": "OpenVINO",
    "onnxruntime": "ONNX Runtime",
}


def _is_default(settings: Settings, field: str) -> bool:
    """The setting holds its default value (whether or not a .env restates it)."""
    return bool(getattr(settings, field) == Settings.model_fields[field].default)


class ModelFileError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    architecture: str
    version: str
    device: str
    runtime: str
    ready: bool
    load_seconds: float
    warmup_seconds: float
    placed_on: str | None = None  # TensorFlow models: the device of their last call's output


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


def _detector_factory(spec: ModelSpec, settings: Settings, device: str) -> Callable[[], Any]:
    min_score = settings.detection_min_score
    threads = model_threads(settings)
    if spec.architecture == "blazeface":
        from facesvc.inference.detectors.blazeface import BlazeFaceDetector

        path = _verified_path(spec, settings.models_dir)
        variant = str(spec.options.get("variant", "full"))
        runtime: Literal["tflite", "openvino"] = (
            "openvino" if spec.resolved_runtime == "openvino" else "tflite"
        )
        precision = _precision(spec)
        return lambda: BlazeFaceDetector(
            path,
            variant,
            min_score=min_score,
            threads=threads,
            runtime=runtime,
            precision=precision,
        )
    if spec.architecture == "ssd":
        from facesvc.inference.detectors.ssd import SSDGraphDetector

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
    if spec.architecture == "mtcnn":
        from facesvc.inference.detectors.mtcnn import MTCNNDetector

        return lambda: MTCNNDetector(device, min_score=min_score)
    raise ValueError(f"{spec.name}: {spec.architecture} is not a detector architecture")


def _embedder_factory(spec: ModelSpec, settings: Settings) -> Callable[[], Any]:
    if spec.architecture == "arcface":
        return _onnx_embedder_factory(spec, settings)
    if spec.architecture != "facenet":
        raise ValueError(f"{spec.name}: {spec.architecture} is not an embedder architecture")
    from facesvc.inference.embedders.facenet import (
        FaceNetEmbedder,
        OpenVINOFaceNetEmbedder,
        TFLiteFaceNetEmbedder,
    )

    path = _verified_path(spec, settings.models_dir)
    size = int(spec.options.get("input_size", 160))
    preprocessing = spec.options.get("preprocessing", "prewhiten")
    if spec.resolved_runtime == "openvino":
        threads = model_threads(settings)
        precision = _precision(spec)
        return lambda: OpenVINOFaceNetEmbedder(
            path, input_size=size, preprocessing=preprocessing, threads=threads, precision=precision
        )
    if spec.resolved_runtime == "tflite":
        threads = model_threads(settings)
        return lambda: TFLiteFaceNetEmbedder(
            path, input_size=size, preprocessing=preprocessing, threads=threads
        )
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


def embedder_contract(spec: ModelSpec) -> EmbedderContract | None:
    """The input contract of an operator's ONNX embedder (``arcface``), None for FaceNet."""
    if spec.architecture != "arcface":
        return None
    return EmbedderContract.from_options(spec.options)


def _onnx_embedder_factory(spec: ModelSpec, settings: Settings) -> Callable[[], Any]:
    from facesvc.inference.embedders.onnx import OnnxEmbedder

    if spec.resolved_runtime != "onnxruntime":
        raise ModelFileError(f"{spec.name}: an arcface embedder must be an ONNX file")
    if not spec.sha256:
        raise ModelFileError(f"{spec.name}: give the file's sha256 in the manifest entry")
    contract = EmbedderContract.from_options(spec.options)
    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    return lambda: OnnxEmbedder(path, contract, threads=threads)


def _mesh_factory(spec: ModelSpec, settings: Settings) -> Callable[[], Any]:
    from facesvc.inference.landmarks.facemesh import FaceMeshModel

    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    return lambda: FaceMeshModel(path, threads=threads)


def _attribute_factory(spec: ModelSpec, settings: Settings) -> Callable[[], Any]:
    from facesvc.inference.attributes.models import DlibFaceNetwork, ExpressionNetwork

    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    if spec.architecture in ("dlib-age", "dlib-gender"):
        size = int(spec.options["input_size"])
        means = [float(v) for v in spec.options["channel_means"]]
        return lambda: DlibFaceNetwork(path, size, means, threads=threads)
    if spec.architecture == "mini-xception":
        return lambda: ExpressionNetwork(path, threads=threads)
    raise ValueError(f"{spec.name}: {spec.architecture} is not an attribute architecture")


def _antispoof_factory(spec: ModelSpec, settings: Settings) -> Callable[[], Any]:
    from facesvc.inference.antispoof import AntispoofContract, AntispoofModel

    if spec.resolved_runtime != "onnxruntime":
        raise ModelFileError(f"{spec.name}: an antispoof model must be an ONNX file")
    if not spec.sha256:
        raise ModelFileError(f"{spec.name}: give the file's sha256 in the manifest entry")
    contract = AntispoofContract.from_options(spec.options)
    path = _verified_path(spec, settings.models_dir)
    threads = model_threads(settings)
    return lambda: AntispoofModel(path, contract, threads=threads)


def _attribute_warm_batch(spec: ModelSpec) -> np.ndarray:
    size = int(spec.options.get("input_size", 64))
    if spec.task == "expression":
        return np.zeros((1, size, size), np.uint8)
    return np.zeros((1, size, size, 3), np.uint8)


def model_factory(spec: ModelSpec, settings: Settings, device: str = "/CPU:0") -> Callable[[], Any]:
    """What loads one manifest model (verified first): the runners' factories, also used by
    benchmarks that load a single model."""
    if spec.task == "detector":
        return _detector_factory(spec, settings, device)
    if spec.task == "embedder":
        return _embedder_factory(spec, settings)
    if spec.task == "mesh":
        return _mesh_factory(spec, settings)
    if spec.task in ATTRIBUTE_TASKS:
        return _attribute_factory(spec, settings)
    if spec.task == "antispoof":
        return _antispoof_factory(spec, settings)
    raise ValueError(f"{spec.name}: unknown task {spec.task!r}")


ATTRIBUTE_TASKS: tuple[Task, ...] = ("age", "gender", "expression")
# The floor threshold of an embedder whose manifest entry gives only a calibration file
DEFAULT_FLOOR_FAR = 1e-2


class ModelRegistry:
    """Loads the configured detector, mesh and embedder once, each behind its own runner;
    with FACESVC_ATTRIBUTES, also the age, gender and expression networks (manifest entries
    of those names)."""

    def __init__(self, settings: Settings, manifest: Manifest | None = None) -> None:
        self.settings = settings
        self.manifest = manifest or Manifest.load(settings.manifest_path)
        self.detector_spec = self.manifest.get(self._cpu_variant("detector"), "detector")
        self.embedder_spec = self.manifest.get(self._embedder_name(settings), "embedder")
        self.mesh_spec = self.manifest.get(settings.mesh, "mesh")
        self.crop_policy = CropPolicy(**self.detector_spec.crop)
        self.embedder_contract = embedder_contract(self.embedder_spec)
        self.embedder_input_size = int(
            self.embedder_spec.options.get(
                "input_size", 160 if self.embedder_contract is None else 112
            )
        )
        self.tf_device = "/CPU:0"
        policy = BatchPolicy(
            max_batch=settings.batch_max_size,
            max_wait=settings.batch_max_wait_ms / 1000.0,
            max_queue=settings.queue_max_items,
        )
        self.detector: DetectorRunner = ModelRunner(
            self.detector_spec.name,
            "/CPU:0",
            ListBatching(),
            policy,
        )
        self.mesh: MeshRunner = ModelRunner(self.mesh_spec.name, "/CPU:0", ListBatching(), policy)
        self.embedder: EmbedderRunner = ModelRunner(
            self.embedder_spec.name, "/CPU:0", ArrayBatching(), policy
        )
        # Attribute networks by task ("age", "gender", "expression"): those the manifest has,
        # when enabled (a manifest of one's own may have none: they are then unavailable).
        self.attribute_specs: dict[str, ModelSpec] = {}
        self.attributes: dict[str, AttributeRunner] = {}
        if settings.attributes:
            for task in ATTRIBUTE_TASKS:
                if task not in self.manifest.models:
                    log.warning(
                        "FACESVC_ATTRIBUTES: %s has no %r entry: that attribute is unavailable",
                        settings.manifest_path,
                        task,
                    )
                    continue
                spec = self.manifest.get(task, task)
                self.attribute_specs[task] = spec
                self.attributes[task] = ModelRunner(spec.name, "/CPU:0", ArrayBatching(), policy)
        # An operator's presentation-attack model (FACESVC_ANTISPOOF_MODEL), off by default.
        self.antispoof_spec: ModelSpec | None = None
        self.antispoof: AttributeRunner | None = None
        self.antispoof_contract: AntispoofContract | None = None
        if settings.antispoof_model:
            self.antispoof_spec = self.manifest.get(settings.antispoof_model, "antispoof")
            self.antispoof_contract = AntispoofContract.from_options(self.antispoof_spec.options)
            self.antispoof = ModelRunner(
                self.antispoof_spec.name, "/CPU:0", ArrayBatching(), policy
            )
        self.embedding_dim = 0

    def _embedder_name(self, settings: Settings) -> str:
        """The configured embedder; on a GPU, unless another than the default was chosen, the
        TF graph FaceNet (TFLite runs on the CPU only): same embedding space and calibration."""
        if settings.device.startswith("gpu") and _is_default(settings, "embedder"):
            log.info(
                "FACESVC_DEVICE=%s: embedder %r (a TensorFlow graph)", settings.device, GPU_EMBEDDER
            )
            return GPU_EMBEDDER
        return self._cpu_variant("embedder")

    def _cpu_variant(self, task: str) -> str:
        """The configured model, or the variant of it that FACESVC_CPU_RUNTIME picks for this
        CPU (facesvc.inference.runtimes); logged. ``auto`` swaps only the default model (a
        .env that restates the default still gets the swap; FACESVC_CPU_RUNTIME=tflite loads
        exactly what is named); ``openvino`` swaps any model that has an OpenVINO variant."""
        settings = self.settings
        configured: str = getattr(settings, task)
        if configured not in self.manifest.models or (
            settings.cpu_runtime == "auto" and not _is_default(settings, task)
        ):
            return configured
        choice = choose_variant(
            self.manifest, configured, settings.cpu_runtime, settings.models_dir
        )
        if choice.reason:
            log.info("FACESVC_CPU_RUNTIME=%s, %s: %s", settings.cpu_runtime, task, choice.reason)
        return choice.name

    @property
    def detector_gives_five_points(self) -> bool:
        return self.detector_spec.architecture == "mtcnn"

    @property
    def runners(self) -> tuple[ModelRunner[Any, Any], ...]:
        optional = (self.antispoof,) if self.antispoof is not None else ()
        return (self.detector, self.mesh, self.embedder, *self.attributes.values(), *optional)

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        """The loaded models' specs, in the order of ``runners``."""
        return (
            self.detector_spec,
            self.mesh_spec,
            self.embedder_spec,
            *(self.attribute_specs[task] for task in self.attributes),
            *((self.antispoof_spec,) if self.antispoof_spec is not None else ()),
        )

    @property
    def ready(self) -> bool:
        return all(runner.ready for runner in self.runners)

    @property
    def threshold(self) -> float:
        """Cosine-similarity threshold (the floor of every decision): the setting if given,
        else the manifest's, else the score calibration's at FAR 1e-2 (an embedder brought
        with only ``facesvc eval calibrate``'s file; FaceNet's 0.40 is FAR 8.2e-3)."""
        if self.settings.match_threshold is not None:
            return self.settings.match_threshold
        if self.embedder_spec.threshold is not None:
            return self.embedder_spec.threshold
        path = self.embedder_spec.calibration_path(self.settings.models_dir)
        if path is not None and path.is_file():  # not yet while `eval calibrate` writes it
            calibration = self.calibration
            if calibration is not None:
                return round(calibration.threshold_for_far(DEFAULT_FLOOR_FAR), 4)
        raise ModelFileError(
            f"embedder {self.embedder_spec.name!r} has no threshold in the manifest and no "
            "calibration_file: run `facesvc eval calibrate --embedder "
            f"{self.embedder_spec.name}` or set FACESVC_MATCH_THRESHOLD"
        )

    @functools.cached_property
    def calibration(self) -> ScoreCalibration | None:
        """Error rates and match probability of the embedder's scores (manifest
        ``calibration_file``), None when the manifest names none. Read once."""
        return self.embedder_spec.load_calibration(self.settings.models_dir)

    def _plans(self) -> list[tuple[ModelRunner[Any, Any], Callable[[], Predictor[Any, Any]], Any]]:
        settings = self.settings
        size = self.embedder_input_size
        blank = np.zeros((256, 256, 3), np.uint8)
        warm_face = Detection(box=Box(64, 64, 128, 128), score=1.0)
        return [
            (
                self.detector,
                _detector_factory(self.detector_spec, settings, self.detector.device),
                [blank],
            ),
            (self.mesh, _mesh_factory(self.mesh_spec, settings), [(blank, warm_face)]),
            (
                self.embedder,
                _embedder_factory(self.embedder_spec, settings),
                np.zeros((1, size, size, 3), np.uint8),
            ),
            *(
                (
                    runner,
                    _attribute_factory(self.attribute_specs[task], settings),
                    _attribute_warm_batch(self.attribute_specs[task]),
                )
                for task, runner in self.attributes.items()
            ),
            *self._antispoof_plan(),
        ]

    def _antispoof_plan(
        self,
    ) -> list[tuple[ModelRunner[Any, Any], Callable[[], Predictor[Any, Any]], Any]]:
        if self.antispoof is None or self.antispoof_spec is None:
            return []
        size = int(self.antispoof_spec.options.get("input_size", 80))
        warm = np.zeros((1, size, size, 3), np.uint8)
        return [(self.antispoof, _antispoof_factory(self.antispoof_spec, self.settings), warm)]

    def _configure(self) -> None:
        """Resolve this worker's TensorFlow device and give it to every runner whose model
        can run there; TFLite models stay on the CPU (said in the log and /readyz). With no
        TensorFlow model and a CPU device (the default plan: TFLite and ONNX Runtime),
        TensorFlow is never imported: ~4 s of CPU and ~600 MB of RSS a worker."""
        uses_tf = any(not _cpu_only(spec) for spec in self.specs)
        if uses_tf or not self.settings.device.startswith("cpu"):
            self.tf_device = configure_tensorflow(
                self.settings.device,
                model_threads(self.settings),
                self.settings.cpu_logical_devices,
            )
        else:
            log.info("no TensorFlow model in this plan: TensorFlow is not loaded")
        for spec, runner in zip(self.specs, self.runners, strict=True):
            runner.device = "/CPU:0" if _cpu_only(spec) else self.tf_device
            runner.tensorflow = not _cpu_only(spec)
            log.info(
                "model %s (%s, %s) on %s%s",
                spec.name,
                spec.task,
                _RUNTIME_NAMES[spec.resolved_runtime],
                runner.device,
                f" ({_RUNTIME_NAMES[spec.resolved_runtime]} runs on the CPU only)"
                if _cpu_only(spec) and self.tf_device != "/CPU:0"
                else "",
            )

    async def start(self) -> None:
        """Verify, load and warm every model; the runners load in parallel."""
        await asyncio.to_thread(self._configure)
        plans = await asyncio.to_thread(self._plans)  # hashing the files is blocking I/O
        await asyncio.gather(*(runner.start(factory, warm) for runner, factory, warm in plans))
        self.embedding_dim = self._embedding_dim()

    def start_sync(self) -> None:
        self._configure()
        for runner, factory, warm in self._plans():
            runner.start_sync(factory, warm)
        self.embedding_dim = self._embedding_dim()

    def _embedding_dim(self) -> int:
        return int(getattr(self.embedder.model, "dim", 0))

    def info(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=spec.name,
                task=spec.task,
                architecture=spec.architecture,
                version=spec.version,
                device=runner.device,
                runtime=spec.resolved_runtime,
                ready=runner.ready,
                load_seconds=round(runner.load_seconds, 3),
                warmup_seconds=round(runner.warmup_seconds, 3),
                placed_on=getattr(runner.model, "placed_on", None) if runner.ready else None,
            )
            for spec, runner in zip(self.specs, self.runners, strict=True)
        ]

    async def aclose(self) -> None:
        """Fail queued requests, then stop the model threads."""
        for runner in self.runners:
            await runner.aclose()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
