"""What a job keeps of each processed photo: a versioned record of the outcome, not the API's
answer. The job runner stores one in ``job_items.result``; the API renders it when the job is
read (api/schemas/jobs.py), so a response model can change without breaking the jobs stored
before a deploy.

Version 1 (``{"v": 1, ...}``):

- a detected photo (:class:`DetectedRecord`): the image size and each face's box, detector
  score and five points, as the pipeline gave them (unrounded);
- an enrolled photo (:class:`EnrolledRecord`): the stored face's id, user and what its row
  says of the photo (box, size, score, model, quality, consent, creation), kept as they were
  at enrolment (deleting or re-embedding the face later does not change the job);
- a failed photo (:class:`FailedRecord`): its problem's slug and detail.

Results stored before there were records have no ``v``: version 0, the API's JSON of the
time, which the API reads as it always has. A change of a record's shape is a new version,
and the readers of the older ones stay.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from facesvc.db.models import Face
from facesvc.errors import FacesvcError
from facesvc.inference.types import AnalysedFace, Box, Detection
from facesvc.services.analysis import AnalysedImage

RECORD_VERSION: Final = 1
Coordinates = tuple[float, float, float, float]  # a box: x, y, width, height in image pixels


def stored_version(result: Mapping[str, Any]) -> int:
    """The version of a stored result: 0 for one stored before records were versioned."""
    version = result.get("v", 0)
    if version not in (0, RECORD_VERSION):
        raise ValueError(f"job result version {version!r} is not one this code reads")
    return int(version)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    v: Literal[1] = RECORD_VERSION

    def stored(self) -> dict[str, Any]:
        """The JSON kept in ``job_items.result``."""
        return self.model_dump(mode="json")


class DetectedFaceRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    box: Coordinates
    score: float
    points: tuple[tuple[float, float], ...]  # the five points, in FIVE_POINT_NAMES order


class DetectedRecord(_Record):
    """A detect job's photo: every face found, largest first."""

    width: int
    height: int
    faces: tuple[DetectedFaceRecord, ...]

    @classmethod
    def of(cls, image: AnalysedImage) -> DetectedRecord:
        if image.attributes is not None:  # detect jobs estimate none (issue 25)
            raise ValueError("a job's record keeps no attributes")
        return cls(
            width=image.width,
            height=image.height,
            faces=tuple(
                DetectedFaceRecord(
                    box=(
                        float(face.box.x),
                        float(face.box.y),
                        float(face.box.width),
                        float(face.box.height),
                    ),
                    score=float(face.detection.score),
                    points=tuple((float(x), float(y)) for x, y in face.points),
                )
                for face in image.faces
            ),
        )

    def analysed(self) -> AnalysedImage:
        """The analysis again, as far as the record keeps it (no mesh, embedding or
        attributes), for the API to answer as it answers a detection."""
        return AnalysedImage(
            width=self.width,
            height=self.height,
            faces=[
                AnalysedFace(
                    Detection(Box(*face.box), face.score),
                    five_points=np.asarray(face.points, dtype=np.float64),
                )
                for face in self.faces
            ],
        )


class EnrolledRecord(_Record):
    """An enrol job's photo: the face it stored."""

    face_id: uuid.UUID
    user_id: uuid.UUID
    box: Coordinates
    image_width: int
    image_height: int
    detection_score: float
    model_name: str
    model_version: str
    quality: float | None
    consented_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, face: Face) -> EnrolledRecord:
        return cls(
            face_id=face.id,
            user_id=face.user_id,
            box=(face.box_x, face.box_y, face.box_width, face.box_height),
            image_width=face.image_width,
            image_height=face.image_height,
            detection_score=face.detection_score,
            model_name=face.model_name,
            model_version=face.model_version,
            quality=face.quality,
            consented_at=face.consented_at,
            created_at=face.created_at,
        )

    def face(self) -> Face:
        """The face as it was enrolled: a detached row holding what the record keeps (no
        embedding), for the API to answer as it answers a stored face."""
        x, y, width, height = self.box
        return Face(
            id=self.face_id,
            user_id=self.user_id,
            box_x=x,
            box_y=y,
            box_width=width,
            box_height=height,
            image_width=self.image_width,
            image_height=self.image_height,
            detection_score=self.detection_score,
            model_name=self.model_name,
            model_version=self.model_version,
            quality=self.quality,
            consented_at=self.consented_at,
            created_at=self.created_at,
        )


class FailedRecord(_Record):
    """A photo that failed: which problem (its slug in facesvc.errors) and why."""

    slug: str
    detail: str

    @classmethod
    def of(cls, error: FacesvcError) -> FailedRecord:
        return cls(slug=error.slug, detail=error.detail)
