"""Users and their enrolled faces."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facesvc.api.problems import Problem
from facesvc.api.schemas.common import BoxOut, ImageSize, ModelRef, Name, Page, storable
from facesvc.db import models as db

MAX_METADATA_BYTES = 4096


def _storable_json(value: Any) -> None:
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(str(key))
            _storable_json(item)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item)


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
        if value is None:
            return value
        _storable_json(value)
        if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class UserOut(BaseModel):
    id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    name: str = Field(examples=["Ada Lovelace"])
    external_id: str | None = Field(default=None, examples=["emp-0042"])
    metadata: dict[str, Any] | None = Field(default=None, examples=[{"department": "R&D"}])
    face_count: int = Field(default=0, description="Faces enrolled", examples=[2])
    created_at: datetime

    @classmethod
    def of(cls, user: db.User, face_count: int) -> UserOut:
        return cls(
            id=user.id,
            name=user.name,
            external_id=user.external_id,
            metadata=user.metadata_,
            face_count=face_count,
            created_at=user.created_at,
        )


class UserPage(Page[UserOut]):
    total: int = Field(description="Users in all pages", examples=[1])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])


class FaceOut(BaseModel):
    face_id: uuid.UUID = Field(examples=["0b9d1f3e-7a2c-4e6b-8d0f-1a3c5e7b9d2f"])
    user_id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    box: BoxOut = Field(description="The enrolled face in the uploaded photo")
    image: ImageSize
    detection_score: float = Field(examples=[0.9731])
    model: ModelRef
    quality: float | None = Field(
        default=None, description="Enrolment quality 0..1 (null: enrolled before it existed)"
    )
    consented_at: datetime | None = Field(
        default=None, description="When the person's consent was recorded"
    )
    created_at: datetime

    @classmethod
    def of(cls, face: db.Face) -> FaceOut:
        return cls(
            face_id=face.id,
            user_id=face.user_id,
            box=BoxOut.of_stored(face),
            image=ImageSize(width=face.image_width, height=face.image_height),
            detection_score=round(face.detection_score, 4),  # as /v1/detect answers it
            model=ModelRef(name=face.model_name, version=face.model_version),
            quality=face.quality,
            consented_at=face.consented_at,
            created_at=face.created_at,
        )


class FaceList(BaseModel):
    items: list[FaceOut]


class BulkEnrolItem(BaseModel):
    """One photo's outcome: ``face`` when it was enrolled, else ``problem``."""

    index: int = Field(description="Position of the photo in the request")
    face: FaceOut | None = None
    problem: Problem | None = None


class BulkEnrolResponse(BaseModel):
    enrolled: int
    failed: int
    items: list[BulkEnrolItem]
