"""Face analysis use cases: detect, landmarks, embed, and "the one face" for recognition."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.types import Face
from facesvc.services.errors import MultipleFacesError, NoFaceError


@dataclass(frozen=True)
class AnalysedImage:
    width: int
    height: int
    faces: list[Face]


@dataclass(frozen=True)
class PrimaryFace:
    """The face a recognition call uses (the largest), with its embedding."""

    width: int
    height: int
    face: Face
    faces_found: int

    @property
    def embedding(self) -> np.ndarray:
        if self.face.embedding is None:
            raise RuntimeError("the primary face was not embedded")
        return self.face.embedding


class FaceAnalysisService:
    def __init__(self, pipeline: FacePipeline, second_face_ratio: float) -> None:
        self.pipeline = pipeline
        self.second_face_ratio = second_face_ratio

    async def analyse(
        self, data: bytes, *, dense: bool = False, embed: bool = False
    ) -> AnalysedImage:
        """Every face in the image, largest first."""
        image = await self.pipeline.decode(data)
        detections = await self.pipeline.detect(image)
        faces = await self.pipeline.landmarks(image, detections, dense=dense)
        if embed:
            faces = await self.pipeline.embed(image, faces)
        height, width = image.shape[:2]
        return AnalysedImage(width=width, height=height, faces=faces)

    async def primary_face(self, data: bytes, *, strict: bool = False) -> PrimaryFace:
        """The largest face, embedded. ``strict`` (enrolment) refuses a photo whose second
        face is nearly as large, since we could not tell whose face is meant."""
        image = await self.pipeline.decode(data)
        detections = await self.pipeline.detect(image)
        if not detections:
            raise NoFaceError("no face was found in the image")
        largest = detections[0]
        if strict and len(detections) > 1:
            ratio = detections[1].box.area / max(largest.box.area, 1e-9)
            if ratio >= self.second_face_ratio:
                raise MultipleFacesError(
                    f"{len(detections)} faces found and the second is {ratio:.0%} the size of "
                    "the largest: send a photo with one clear face",
                    faces=len(detections),
                )
        faces = await self.pipeline.landmarks(image, [largest])
        (face,) = await self.pipeline.embed(image, faces)
        height, width = image.shape[:2]
        return PrimaryFace(width=width, height=height, face=face, faces_found=len(detections))
