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
from facesvc.inference.manifest import Manifest, ModelSpec, Task
from facesvc.inference.runner import Batching, ModelRunner, Predictor
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


def embedder_input_size(spec: ModelSpec) -> int:
    """The side of the embedder's square crops: its entry's, else FaceNet's 160 or ArcFace's
    112."""
    return int(spec.options.get("input_size", 112 if spec.architecture == "arcface" else 160))


def _input_size(spec: ModelSpec, default: int) -> int:
    return int(spec.options.get("input_size", default))


def _crops(size: int, grey: bool = False) -> np.ndarray:
    return np.zeros((1, size, size) if grey else (1, size, size, 3), np.uint8)


_WARM_FACE = Detection(box=Box(64, 64, 128, 128), score=1.0)


@dataclass(frozen=True)
class _TaskInput:
    """How a task's runner merges and splits batches, and a dummy batch of one in the task's
    input shape (the first call builds kernels and allocates buffers)."""

    batching: Batching[Any, Any]
    warm_batch: Callable[[ModelSpec], Any]


_TASK_INPUTS: dict[Task, _TaskInput] = {
    "detector": _TaskInput(ListBatching(), lambda spec: [np.zeros((256, 256, 3), np.uint8)]),
    "mesh": _TaskInput(
        ListBatching(), lambda spec: [(np.zeros((256, 256, 3), np.uint8), _WARM_FACE)]
    ),
    "embedder": _TaskInput(ArrayBatching(), lambda spec: _crops(embedder_input_size(spec))),
    "age": _TaskInput(ArrayBatching(), lambda spec: _crops(_input_size(spec, 64))),
    "gender": _TaskInput(ArrayBatching(), lambda spec: _crops(_input_size(spec, 64))),
    "expression": _TaskInput(
        ArrayBatching(), lambda spec: _crops(_input_size(spec, 64), grey=True)
    ),
    "antispoof": _TaskInput(ArrayBatching(), lambda spec: _crops(_input_size(spec, 80))),
}


@dataclass(frozen=True)
class ModelSlot:
    """One model of this worker: its manifest entry, the runner it runs behind and the batch
    that warms it; what loads it comes from factories.FACTORIES."""

    spec: ModelSpec
    runner: ModelRunner[Any, Any]
    warm_batch: Any

    @classmethod
    def of(cls, spec: ModelSpec, policy: BatchPolicy) -> ModelSlot:
        inputs = _TASK_INPUTS[spec.task]
        runner = ModelRunner(spec.name, "/CPU:0", inputs.batching, policy)
        return cls(spec, runner, inputs.warm_batch(spec))

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def cpu_only(self) -> bool:
        return runs_on_cpu_only(self.spec)

    def factory(self, settings: Settings) -> Callable[[], Predictor[Any, Any]]:
        """What loads the model on the runner's thread (the file verified first: blocking
        I/O)."""
        return model_factory(self.spec, settings, self.runner.device)


# The floor threshold of an embedder whose manifest entry gives only a calibration file
DEFAULT_FLOOR_FAR = 1e-2


class ModelRegistry:
    """Loads the configured detector, mesh and embedder once, each behind its own runner;
    with FACESVC_ATTRIBUTES, also the age, gender and expression networks (manifest entries
    of those names), and with FACESVC_ANTISPOOF_MODEL an operator's antispoof model. Each is
    a ``ModelSlot`` of ``slots``, which everything that goes over all models iterates."""

    def __init__(self, settings: Settings, manifest: Manifest | None = None) -> None:
        self.settings = settings
        self.manifest = manifest or Manifest.load(settings.manifest_path)
        self.detector_spec = self.manifest.get(self._cpu_variant("detector"), "detector")
        self.embedder_spec = self.manifest.get(self._embedder_name(settings), "embedder")
        self.mesh_spec = self.manifest.get(settings.mesh, "mesh")
        self.crop_policy = CropPolicy(**self.detector_spec.crop)
        self.embedder_contract = embedder_contract(self.embedder_spec)
        self.embedder_input_size = embedder_input_size(self.embedder_spec)
        self.tf_device = "/CPU:0"
        self.attribute_specs = self._attribute_specs() if settings.attributes else {}
        # An operator's presentation-attack model (FACESVC_ANTISPOOF_MODEL), off by default.
        self.antispoof_spec: ModelSpec | None = None
        self.antispoof_contract: AntispoofContract | None = None
        if settings.antispoof_model:
            self.antispoof_spec = self.manifest.get(settings.antispoof_model, "antispoof")
            self.antispoof_contract = AntispoofContract.from_options(self.antispoof_spec.options)
        policy = BatchPolicy(
            max_batch=settings.batch_max_size,
            max_wait=settings.batch_max_wait_ms / 1000.0,
            max_queue=settings.queue_max_items,
        )
        # Every model of this worker, in the order of runners, specs, start-up and info()
        self.slots: tuple[ModelSlot, ...] = tuple(
            ModelSlot.of(spec, policy)
            for spec in (
                self.detector_spec,
                self.mesh_spec,
                self.embedder_spec,
                *self.attribute_specs.values(),
                *([self.antispoof_spec] if self.antispoof_spec is not None else []),
            )
        )
        runners: dict[str, ModelRunner[Any, Any]] = {slot.task: slot.runner for slot in self.slots}
        self.detector: DetectorRunner = runners["detector"]
        self.mesh: MeshRunner = runners["mesh"]
        self.embedder: EmbedderRunner = runners["embedder"]
        self.attributes: dict[str, AttributeRunner] = {t: runners[t] for t in self.attribute_specs}
        self.antispoof: AttributeRunner | None = runners.get("antispoof")
        self.embedding_dim = 0

    def _attribute_specs(self) -> dict[str, ModelSpec]:
        """Attribute networks by task ("age", "gender", "expression"): those the manifest has
        (a manifest of one's own may have none: they are then unavailable)."""
        specs: dict[str, ModelSpec] = {}
        for task in ATTRIBUTE_TASKS:
            if task not in self.manifest.models:
                log.warning(
                    "FACESVC_ATTRIBUTES: %s has no %r entry: that attribute is unavailable",
                    self.settings.manifest_path,
                    task,
                )
                continue
            specs[task] = self.manifest.get(task, task)
        return specs

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
        return tuple(slot.runner for slot in self.slots)

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        """The loaded models' specs, in the order of ``runners``."""
        return tuple(slot.spec for slot in self.slots)

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
        return [(slot.runner, slot.factory(self.settings), slot.warm_batch) for slot in self.slots]

    def _configure(self) -> None:
        """Resolve this worker's TensorFlow device and give it to every runner whose model
        can run there; TFLite models stay on the CPU (said in the log and /readyz). With no
        TensorFlow model and a CPU device (the default plan: TFLite and ONNX Runtime),
        TensorFlow is never imported: ~4 s of CPU and ~600 MB of RSS a worker."""
        uses_tf = any(not slot.cpu_only for slot in self.slots)
        if uses_tf or not self.settings.device.startswith("cpu"):
            self.tf_device = configure_tensorflow(
                self.settings.device,
                model_threads(self.settings),
                self.settings.cpu_logical_devices,
            )
        else:
            log.info("no TensorFlow model in this plan: TensorFlow is not loaded")
        for slot in self.slots:
            spec, runner = slot.spec, slot.runner
            runner.device = "/CPU:0" if slot.cpu_only else self.tf_device
            runner.tensorflow = not slot.cpu_only
            log.info(
                "model %s (%s, %s) on %s%s",
                spec.name,
                spec.task,
                _RUNTIME_NAMES[spec.resolved_runtime],
                runner.device,
                f" ({_RUNTIME_NAMES[spec.resolved_runtime]} runs on the CPU only)"
                if slot.cpu_only and self.tf_device != "/CPU:0"
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
                name=slot.spec.name,
                task=slot.task,
                architecture=slot.spec.architecture,
                version=slot.spec.version,
                device=slot.runner.device,
                runtime=slot.spec.resolved_runtime,
                ready=slot.runner.ready,
                load_seconds=round(slot.runner.load_seconds, 3),
                warmup_seconds=round(slot.runner.warmup_seconds, 3),
                placed_on=getattr(slot.runner.model, "placed_on", None)
                if slot.runner.ready
                else None,
            )
            for slot in self.slots
        ]

    async def aclose(self) -> None:
        """Fail queued requests, then stop the model threads."""
        for runner in self.runners:
            await runner.aclose()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()
