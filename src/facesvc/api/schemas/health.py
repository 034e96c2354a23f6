"""Probes and problem types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ProblemType(BaseModel):
    """What a problem ``type`` means (GET /problems/{slug})."""

    type: str = Field(examples=["/problems/no-face"])
    title: str = Field(examples=["No face found"])
    description: str = Field(
        examples=["The detector found no face in the image. Send a sharper, better lit photo."]
    )


class ModelStatus(BaseModel):
    name: str
    task: str
    architecture: str
    version: str
    device: str = Field(
        description="Where the model runs: this worker's FACESVC_DEVICE for TensorFlow models, "
        "/CPU:0 for TFLite, OpenVINO and ONNX Runtime ones (CPU only)",
        examples=["/CPU:0"],
    )
    runtime: Literal["tensorflow", "tflite", "openvino", "onnxruntime"] = Field(
        description="What runs it (FACESVC_CPU_RUNTIME picks among a model's variants)",
        examples=["tflite"],
    )
    ready: bool
    load_seconds: float
    warmup_seconds: float
    placed_on: str | None = Field(
        default=None,
        description="TensorFlow models: the device their last call's output was placed on",
        examples=["/job:localhost/replica:0/task:0/device:GPU:1"],
    )


class WorkerStatus(BaseModel):
    """The worker process that answered, and how it shares the machine."""

    pid: int = Field(examples=[4321])
    index: int = Field(description="0 .. workers-1", examples=[0])
    workers: int = Field(description="Worker processes of this server", examples=[2])
    threads_per_model: int = Field(
        description="Threads each model runs in this worker", examples=[1]
    )
    cores: int = Field(description="CPU cores the process may use", examples=[2])


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    database: str = Field(examples=["ok"])
    models: list[ModelStatus]
    worker: WorkerStatus | None = None
    faces_needing_reembed: int = Field(
        default=0,
        description="Stored faces embedded by another model (a model change): not matched "
        "until `facesvc reembed` recomputes them",
        examples=[0],
    )
    gallery_backend: str = Field(
        default="exact",
        description="Where 1:N searches run (FACESVC_GALLERY_BACKEND): in this process "
        "(exact, ivf, hnsw) or in PostgreSQL (pgvector)",
        examples=["pgvector"],
    )
    gallery_faces: int | None = Field(
        default=None,
        description="Faces this worker holds for 1:N (null: the database holds them)",
        examples=[1000],
    )


class LiveResponse(BaseModel):
    status: str = Field(examples=["ok"])
    version: str
