"""What the enrolment quality evaluation measures (evaluation/quality.py): one photo through
the pipeline (its centre face's embedding, quality and pose), the degradations applied to
it, and every comparison a run collects."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facesvc.evaluation.lfw import nearest_centre
from facesvc.inference.images import decode_image
from facesvc.inference.landmarks.signals import head_pose
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.quality import (
    FaceQuality,
    assess_face,
    sharpness,
)

SIZE_LEVELS_PX = (16, 20, 24, 28, 32, 40, 48, 64, 80)
BLUR_SIGMAS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
# Sharpness is also measured at these crop sizes, to show why SHARPNESS_SIZE was chosen.
SHARPNESS_SIZES_STUDIED = (16, 24, 32, 48, 64)
_MAX_PIXELS = 40_000_000  # LFW photos are 250 x 250


@dataclass(frozen=True)
class Measurement:
    """One photo through the pipeline: its centre face's embedding and quality."""

    embedding: np.ndarray
    quality: FaceQuality
    inter_ocular_px: float
    sharpness_at: tuple[float, ...]  # at SHARPNESS_SIZES_STUDIED
    mesh_yaw_deg: float = math.nan  # from the face mesh's 3-D eye line, for calibration
    mesh_pitch_deg: float = math.nan


async def measure(pipeline: FacePipeline, image: np.ndarray) -> Measurement | None:
    """The face nearest the centre (LFW's person), embedded and assessed; None: no face."""
    detections = await pipeline.detect(image)
    if not detections:
        return None
    centre = nearest_centre(detections, image.shape[1], image.shape[0])
    faces = await pipeline.landmarks(image, [centre], dense=True)
    (face,) = await pipeline.embed(image, faces)
    embedding = face.embedding
    if embedding is None:  # unreachable: embed sets it
        raise RuntimeError("the face was not embedded")

    def assess() -> Measurement:
        yaw, pitch = (math.nan, math.nan) if face.mesh is None else mesh_angles(face.mesh)
        points = face.points.astype(np.float64)
        return Measurement(
            embedding=embedding,
            quality=assess_face(image, face.box, face.points),
            inter_ocular_px=float(np.hypot(*(points[1] - points[0]))),
            sharpness_at=tuple(sharpness(image, face.box, s) for s in SHARPNESS_SIZES_STUDIED),
            mesh_yaw_deg=yaw,
            mesh_pitch_deg=pitch,
        )

    return await asyncio.to_thread(assess)


def mesh_angles(mesh: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from the mesh's 3-D points (``landmarks.signals.head_pose``)."""
    pose = head_pose(mesh)
    return pose.yaw, pose.pitch


def downscale_to_face(image: np.ndarray, face_px: float, target_px: float) -> np.ndarray | None:
    """The whole photo shrunk so its face (``face_px`` now) is ``target_px``; None if that is
    not smaller."""
    factor = target_px / face_px
    if factor >= 1.0:
        return None
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small: np.ndarray = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    out: np.ndarray = cv2.GaussianBlur(image, (0, 0), sigma)
    return out


def load_rgb(path: Path) -> np.ndarray:
    """The photo as the service decodes an upload (RGB, EXIF orientation applied)."""
    return decode_image(path.read_bytes(), max_pixels=_MAX_PIXELS)


@dataclass
class Samples:
    """Every comparison made: one row per degraded (or original) photo ``b`` of a pair."""

    kind: list[str] = field(default_factory=list)  # "original", "size", "blur"
    level: list[float] = field(default_factory=list)  # target px, sigma, or 0
    pair: list[int] = field(default_factory=list)
    found: list[bool] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)  # nan when not found
    face_size_px: list[float] = field(default_factory=list)
    inter_ocular_px: list[float] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    sharpness_at: list[tuple[float, ...]] = field(default_factory=list)
    yaw_deg: list[float] = field(default_factory=list)
    pitch_deg: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    def add(
        self, kind: str, level: float, pair: int, m: Measurement | None, ref: Measurement
    ) -> None:
        nan = math.nan
        self.kind.append(kind)
        self.level.append(level)
        self.pair.append(pair)
        self.found.append(m is not None)
        self.similarity.append(nan if m is None else float(m.embedding @ ref.embedding))
        q = None if m is None else m.quality
        self.face_size_px.append(nan if q is None else q.face_size_px)
        self.inter_ocular_px.append(nan if m is None else m.inter_ocular_px)
        self.sharpness.append(nan if q is None else q.sharpness)
        self.sharpness_at.append(
            (nan,) * len(SHARPNESS_SIZES_STUDIED) if m is None else m.sharpness_at
        )
        self.yaw_deg.append(nan if q is None else q.yaw_deg)
        self.pitch_deg.append(nan if q is None else q.pitch_deg)
        self.score.append(nan if q is None else q.score)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            name: np.asarray(getattr(self, name))
            for name in (
                "kind",
                "level",
                "pair",
                "found",
                "similarity",
                "face_size_px",
                "inter_ocular_px",
                "sharpness",
                "yaw_deg",
                "pitch_deg",
                "score",
            )
        }
        out["sharpness_at"] = np.asarray(self.sharpness_at, dtype=np.float64).reshape(
            -1, len(SHARPNESS_SIZES_STUDIED)
        )
        return out


@dataclass
class PoseComparisons:
    """Genuine comparisons of original photos, each pair twice (either photo enrolled)."""

    similarity: list[float] = field(default_factory=list)  # -1: a photo without a face
    enrolled_yaw_deg: list[float] = field(default_factory=list)
    enrolled_pitch_deg: list[float] = field(default_factory=list)
    enrolled_face_size_px: list[float] = field(default_factory=list)
    enrolled_inter_ocular_px: list[float] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"pose_{name}": np.asarray(values) for name, values in vars(self).items()}


@dataclass
class QualityRun:
    samples: Samples
    pose: PoseComparisons
    originals: dict[str, Measurement | None]
    match_threshold: float
    seconds: float = 0.0
