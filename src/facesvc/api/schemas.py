"""Request and response models (the OpenAPI schema and generated clients come from these)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from facesvc.inference.types import FIVE_POINT_NAMES, Box, Face

Point = tuple[float, float]
Point3 = tuple[float, float, float]
MAX_METADATA_BYTES = 4096


class ImageSize(BaseModel):
    width: int = Field(examples=[640])
    height: int = Field(examples=[480])


class BoxOut(BaseModel):
    """Face box in original image pixels (x, y is the top-left corner)."""

    x: float = Field(examples=[212.4])
    y: float = Field(examples=[96.0])
    width: float = Field(examples=[141.7])
    height: float = Field(examples=[141.7])

    @classmethod
    def of(cls, box: Box) -> BoxOut:
        return cls(
            x=round(box.x, 2),
            y=round(box.y, 2),
            width=round(box.width, 2),
            height=round(box.height, 2),
        )


class FiveLandmarks(BaseModel):
    """Five points in image pixels; left/right as seen in the image."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class DetectedFace(BaseModel):
    box: BoxOut
    score: float = Field(ge=0.0, le=1.0, description="Detector confidence")
    landmarks: FiveLandmarks

    @classmethod
    def fields_of(cls, face: Face) -> dict[str, Any]:
        points = {
            name: (round(float(x), 2), round(float(y), 2))
            for name, (x, y) in zip(FIVE_POINT_NAMES, face.five_points, strict=True)
        }
        return {
            "box": BoxOut.of(face.box),
            "score": round(face.detection.score, 4),
            "landmarks": FiveLandmarks(**points),
        }


class DetectResponse(BaseModel):
    image: ImageSize
    faces: list[DetectedFace] = Field(description="Every face found, largest first")


class LandmarkFace(DetectedFace):
    mesh: list[Point3] | None = Field(
        default=None, description="468 (x, y, z) MediaPipe face-mesh points when dense=true"
    )


class LandmarksResponse(BaseModel):
    image: ImageSize
    faces: list[LandmarkFace]


class ModelRef(BaseModel):
    name: str = Field(examples=["facenet"])
    version: str = Field(examples=["20170512-110547-keras-frozen-1"])


class EmbeddedFace(DetectedFace):
    embedding: list[float] = Field(description="L2-normalised embedding (128 floats)")
    model: str = Field(examples=["facenet"])


class EmbedResponse(BaseModel):
    image: ImageSize
    model: ModelRef
    faces: list[EmbeddedFace]


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(examples=["Ada Lovelace"])
    external_id: Name | None = Field(
        default=None, description="Your own unique id for this person", examples=["emp-0042"]
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=f"Free JSON object, at most {MAX_METADATA_BYTES} bytes",
        examples=[{"department": "R&D"}],
    )

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class UserOut(BaseModel):
    id: uuid.UUID
    name: str
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    face_count: int = 0
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class FaceOut(BaseModel):
    face_id: uuid.UUID
    user_id: uuid.UUID
    box: BoxOut
    image: ImageSize
    detection_score: float
    model: ModelRef
    created_at: datetime


class FaceList(BaseModel):
    items: list[FaceOut]


class MatchScore(BaseModel):
    match: bool
    similarity: float = Field(description="Cosine similarity of the embeddings, -1..1")
    distance: float = Field(description="Euclidean distance of the normalised embeddings, 0..2")
    threshold: float = Field(description="Similarity at or above which faces match")


class VerifyResponse(MatchScore):
    user_id: uuid.UUID
    face_id: uuid.UUID = Field(description="The enrolled face that matched best")
    faces_compared: int
    box: BoxOut = Field(description="The face used from the query photo (the largest)")


class Candidate(BaseModel):
    user_id: uuid.UUID
    name: str
    similarity: float


class IdentifyResponse(BaseModel):
    match: uuid.UUID | None = Field(
        description="The best candidate's user_id if it clears the threshold, else null "
        "(an unknown person)"
    )
    threshold: float
    candidates: list[Candidate] = Field(description="One entry per user, best first")
    box: BoxOut


class CompareResponse(MatchScore):
    box_a: BoxOut
    box_b: BoxOut


class ModelStatus(BaseModel):
    name: str
    task: str
    architecture: str
    version: str
    device: str
    ready: bool
    load_seconds: float
    warmup_seconds: float


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    database: str = Field(examples=["ok"])
    models: list[ModelStatus]


class LiveResponse(BaseModel):
    status: str = Field(examples=["ok"])
    version: str


class LegacyRegisterResponse(BaseModel):
    user_id: uuid.UUID
    name: str
    face_id: uuid.UUID
    box: BoxOut


class LegacyLoginResponse(BaseModel):
    match: bool
    user_id: uuid.UUID | None
    name: str | None
    similarity: float | None
    threshold: float
