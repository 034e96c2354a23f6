"""Face analysis use cases: detect, landmarks, embed, and "the one face" for recognition."""

from __future__ import annotations

import asyncio
from collections.abc import Set
from dataclasses import dataclass

import cv2
import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.errors import (
    AttributesNotEnabledError,
    AttributesUnavailableError,
    FaceQualityError,
    MultipleFacesError,
    NoFaceError,
)
from facesvc.inference.attributes import ATTRIBUTES, NETWORK_ATTRIBUTES, Attribute
from facesvc.inference.attributes.models import FaceAttributes
from facesvc.inference.images import encode_jpeg
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.quality import FaceQuality, QualityThresholds, assess_face
from facesvc.inference.types import AnalysedFace, Box
from facesvc.repositories.tenants import TenantRepository
from facesvc.security.keys import Caller

# The crop kept for re-embedding (FACESVC_STORE_FACE_CROPS): the face box widened this much,
# square, at most this many pixels a side, JPEG. Wide enough for a detector to find the face
# again and for any crop policy a future embedder may use.
CROP_SCALE = 1.8
CROP_MAX_SIDE = 256


def face_crop_jpeg(image: np.ndarray, box: Box) -> bytes:
    """A square crop around ``box`` of the decoded (RGB) image, padded with black beyond the
    image, as JPEG bytes."""
    cx, cy = box.center
    side = max(box.width, box.height) * CROP_SCALE
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = x0 + round(side), y0 + round(side)
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT) if pad else image
    crop = padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    if crop.shape[0] > CROP_MAX_SIDE:
        crop = cv2.resize(crop, (CROP_MAX_SIDE, CROP_MAX_SIDE), interpolation=cv2.INTER_AREA)
    return encode_jpeg(np.ascontiguousarray(crop), quality=95)


# Estimated only for a tenant that turned them on (Tenant.sensitive_attributes): expression is
# emotion recognition, age and gender biometric categorisation, which the EU AI Act prohibits
# or restricts (Art. 5(1)(f) and (g), Annex III). Pose is not sensitive: quality and liveness
# read it too.
SENSITIVE_ATTRIBUTES: frozenset[Attribute] = frozenset({"age", "gender", "expression"})


async def require_attributes_allowed(
    caller: Caller, wanted: Set[Attribute], sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Refuse age, gender and expression to a tenant that has not turned them on (403
    ``attributes-not-enabled``); the setting comes with the caller's key, so an API request
    reads nothing more."""
    asked = [a for a in ATTRIBUTES if a in wanted and a in SENSITIVE_ATTRIBUTES]
    if not asked:
        return
    allowed = caller.sensitive_attributes
    if allowed is None:  # a caller not read with its key (the CLI's operator): read the tenant
        async with session_scope(sessionmaker) as session:
            tenant = await TenantRepository(session).get(caller.tenant_id)
        allowed = tenant is not None and tenant.sensitive_attributes
    if not allowed:
        raise AttributesNotEnabledError(
            f"{', '.join(asked)}: not enabled for your tenant. An admin key turns them on "
            'with PATCH /v1/tenant {"sensitive_attributes": true} (where the law allows it: '
            "never to infer emotions at work or in education, EU AI Act Art. 5(1)(f)); "
            "pose needs no setting"
        )


@dataclass(frozen=True)
class AnalysedImage:
    width: int
    height: int
    faces: list[AnalysedFace]
    attributes: list[FaceAttributes] | None = None  # one per face, when asked for


@dataclass(frozen=True)
class PrimaryFace:
    """The face a recognition call uses (the largest), with its embedding."""

    width: int
    height: int
    face: AnalysedFace
    faces_found: int
    quality: FaceQuality | None = None
    crop: bytes | None = None  # JPEG, when asked for (re-embedding)

    @property
    def embedding(self) -> np.ndarray:
        if self.face.embedding is None:
            raise RuntimeError("the primary face was not embedded")
        return self.face.embedding


class FaceAnalysisService:
    def __init__(self, pipeline: FacePipeline) -> None:
        self.pipeline = pipeline

    async def analyse(
        self,
        data: bytes,
        *,
        dense: bool = False,
        embed: bool = False,
        attributes: Set[Attribute] = frozenset(),
    ) -> AnalysedImage:
        """Every face in the image, largest first; with ``attributes``, those of each face
        (nothing is computed for attributes not asked for)."""
        missing = [a for a in NETWORK_ATTRIBUTES if a in attributes]
        missing = [a for a in missing if a not in self.pipeline.attribute_networks]
        if missing:  # before any work: the answer would not depend on the image
            raise AttributesUnavailableError(
                f"{', '.join(missing)}: not available on this service (FACESVC_ATTRIBUTES=false, "
                "or its model manifest has no such entry); pose is"
            )
        image = await self.pipeline.decode(data)
        detections = await self.pipeline.detect(image)
        # age and gender are aligned on mesh points, pose is read from the mesh
        need_mesh = dense or bool({"age", "gender", "pose"} & set(attributes))
        faces = await self.pipeline.landmarks(image, detections, dense=need_mesh)
        found = await self.pipeline.attributes(image, faces, attributes) if attributes else None
        if need_mesh and not dense:
            for face in faces:
                face.mesh = None
        if embed:
            faces = await self.pipeline.embed(image, faces)
        height, width = image.shape[:2]
        return AnalysedImage(width=width, height=height, faces=faces, attributes=found)

    async def primary_face(
        self,
        data: bytes,
        *,
        second_face_ratio: float | None = None,
        quality: QualityThresholds | None = None,
        keep_crop: bool = False,
    ) -> PrimaryFace:
        """The largest face, embedded. ``second_face_ratio`` (enrolment) refuses a photo whose
        second face has at least that fraction of the largest one's area, since we could not
        tell whose face is meant; ``quality`` refuses a face too small, blurred or turned away
        (before it is embedded)."""
        image = await self.pipeline.decode(data)
        detections = await self.pipeline.detect(image)
        if not detections:
            raise NoFaceError("no face was found in the image")
        largest = detections[0]
        if second_face_ratio is not None and len(detections) > 1:
            ratio = detections[1].box.area / max(largest.box.area, 1e-9)
            if ratio >= second_face_ratio:
                raise MultipleFacesError(
                    f"{len(detections)} faces found and the second is {ratio:.0%} the size of "
                    "the largest: send a photo with one clear face",
                    faces=len(detections),
                )
        face = AnalysedFace(detection=largest)  # recognition crops by the box: no landmark model
        measured = None
        if quality is not None:  # the pose check needs the five points
            (face,) = await self.pipeline.landmarks(image, [largest])
            # sharpness and pose are pixel work (7-28 ms on large photos): off the event loop
            measured = await asyncio.to_thread(assess_face, image, face.box, face.points, quality)
            problem = quality.problem(measured)
            if problem is not None:
                raise FaceQualityError.for_reason(problem)(
                    f"{problem.replace('-', ' ')}: {_explain(measured, quality)}",
                    quality=measured.as_dict(),
                )
        (face,) = await self.pipeline.embed(image, [face])
        crop = await asyncio.to_thread(face_crop_jpeg, image, face.box) if keep_crop else None
        height, width = image.shape[:2]
        return PrimaryFace(
            width=width,
            height=height,
            face=face,
            faces_found=len(detections),
            quality=measured,
            crop=crop,
        )


def _explain(q: FaceQuality, limits: QualityThresholds) -> str:
    return (
        f"face {q.face_size_px:.0f} px (min {limits.min_face_size_px:.0f}), sharpness "
        f"{q.sharpness:.0f} (min {limits.min_sharpness:.0f}), yaw {q.yaw_deg:.0f} deg "
        f"(max {limits.max_yaw_deg:.0f}), pitch {q.pitch_deg:.0f} deg "
        f"(max {limits.max_pitch_deg:.0f})"
    )
