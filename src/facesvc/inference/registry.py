"""The model registry: manifest name -> spec -> loaded, warmed model behind its runner."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from facesvc.inference.antispoof import AntispoofContract
from facesvc.inference.batching import ArrayBatching, BatchPolicy, ListBatching
from facesvc.inference.calibration import ScoreCalibration
from facesvc.inference.devices import configure_tensorflow
from facesvc.inference.embedders.onnx import EmbedderContract
from facesvc.inference.factories import ATTRIBUTE_TASKS, model_threads, runs_on_cpu_only

# Exported from here too: callers of the registry catch ModelFileError, benchmarks load one
# model with model_factory.
from facesvc.inference.factories import ModelFileError as ModelFileError
from facesvc.inference.factories import model_factory as model_factory
from facesvc.inference.geometry import CropPolicy
from facesvc.inference.manifest import Manifest, ModelSpec
from facesvc.inference.runner import ModelRunner, Predictor
from facesvc.inference.runtimes import choose_variant
from facesvc.inference.types import Box, Detection
from facesvc.settings import Settings

log = logging.getLogger(__name__)

DetectorRunner = ModelRunner[list[np.ndarray], list[list[Detection]]]
MeshRunner = ModelRunner[list[tuple[np.ndarray, Detection]], list[np.ndarray]]
EmbedderRunner = ModelRunner[np.ndarray, np.ndarray]
# Age, gender, expression: crops in, class probabilities out.
AttributeRunner = ModelRunner[np.ndarray, np.ndarray]

# The embedder FACESVC_DEVICE=gpu loads unless FACESVC_EMBEDDER says otherwise.
GPU_EMBEDDER = "facenet"

_RUNTIME_NAMES = {
    "tensorflow": "TensorFlow",
    "tflite": "TFLite",
    "openvino": "OpenVINO",
    "onnxruntime": "ONNX Runtime",
}


def _is_default(settings: Settings, field: str) -> bool:
    """The setting holds its default value (whether or not a .env restates it)."""
    return bool(getattr(settings, field) == Settings.model_fields[field].default)


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


def embedder_contract(spec: ModelSpec) -> EmbedderContract | None:
    """The input contract of an operator's ONNX embedder (``arcface``), None for FaceNet."""
    if spec.architecture != "arcface":
        return None
    return EmbedderContract.from_options(spec.options)


def _attribute_warm_batch(spec: ModelSpec) -> np.ndarray:
    size = int(spec.options.get("input_size", 64))
    if spec.task == "expression":
        return np.zeros((1, size, size), np.uint8)
    return np.zeros((1, size, size, 3), np.uint8)


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
                model_factory(self.detector_spec, settings, self.detector.device),
                [blank],
            ),
            (self.mesh, model_factory(self.mesh_spec, settings), [(blank, warm_face)]),
            (
                self.embedder,
                model_factory(self.embedder_spec, settings),
                np.zeros((1, size, size, 3), np.uint8),
            ),
            *(
                (
                    runner,
                    model_factory(self.attribute_specs[task], settings),
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
        return [(self.antispoof, model_factory(self.antispoof_spec, self.settings), warm)]

    def _configure(self) -> None:
        """Resolve this worker's TensorFlow device and give it to every runner whose model
        can run there; TFLite models stay on the CPU (said in the log and /readyz). With no
        TensorFlow model and a CPU device (the default plan: TFLite and ONNX Runtime),
        TensorFlow is never imported: ~4 s of CPU and ~600 MB of RSS a worker."""
        uses_tf = any(not runs_on_cpu_only(spec) for spec in self.specs)
        if uses_tf or not self.settings.device.startswith("cpu"):
            self.tf_device = configure_tensorflow(
                self.settings.device,
                model_threads(self.settings),
                self.settings.cpu_logical_devices,
            )
        else:
            log.info("no TensorFlow model in this plan: TensorFlow is not loaded")
        for spec, runner in zip(self.specs, self.runners, strict=True):
            runner.device = "/CPU:0" if runs_on_cpu_only(spec) else self.tf_device
            runner.tensorflow = not runs_on_cpu_only(spec)
            log.info(
                "model %s (%s, %s) on %s%s",
                spec.name,
                spec.task,
                _RUNTIME_NAMES[spec.resolved_runtime],
                runner.device,
                f" ({_RUNTIME_NAMES[spec.resolved_runtime]} runs on the CPU only)"
                if runs_on_cpu_only(spec) and self.tf_device != "/CPU:0"
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
