"""Enrolment quality of one found face: size, sharpness and pose, from what the pipeline has.

``assess_face`` takes the decoded photo (RGB, as ``FacePipeline.decode`` returns it), the
face's box and its five points (original image pixels, as ``FacePipeline.landmarks`` hands
them out); it runs no model and takes ~0.5 ms for a 100 px face (~20 ms for a 900 px one:
the resize). The default ``QualityThresholds`` come from ``facesvc eval quality``
(``docs/eval/quality.json``, method in ``docs/eval/quality.md``): each is where the
true-accept rate of LFW genuine pairs at the service's match threshold falls below 95% as that
one property gets worse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from facesvc.inference.types import Box

QualityProblem = Literal["face-too-small", "face-too-blurry", "face-turned-away"]

# Sharpness is measured on the face box resized to this fixed square (area averaging when
# shrinking), so it describes the detail a face holds rather than how many pixels the photo
# spends on it: a face shrunk from ~110 to 64-80 px keeps ~90% of its sharpness (median over
# 200 LFW faces), to 40-48 px ~70%. 32 px is near the smallest face the size gate accepts.
# Smaller squares see less of a blur and flag more sharp photos (16 px: 13% of LFW's
# originals); larger ones read small sharp faces as blurred ("crop_size_study" in
# docs/eval/quality.json).
SHARPNESS_SIZE = 32

# Five points -> angles. yaw: the nose's sideways offset from the eye-mouth midline, over the
# inter-ocular distance (r); a nose d in front of eyes 2e apart turned by t gives
# r = (d / 2e) tan t, so t = atan(YAW_GAIN r). pitch: where the nose sits between the eye line
# (0) and the mouth line (1), p; t = atan(PITCH_GAIN (p - PITCH_NEUTRAL)). The constants are
# least-squares fits (in tan) to the face mesh's own 3-D eye line and eyes-to-mouth line on
# 4,720 LFW faces: within 1.6 (yaw) and 2.6 (pitch) degrees RMS of the mesh; each run of
# `facesvc eval quality` refits them ("pose_calibration" in docs/eval/quality.json).
YAW_GAIN = 1.54
PITCH_GAIN = 1.74
PITCH_NEUTRAL = 0.59

# Steepness of each factor of the score: a factor is 1/2 at its threshold and ~0.94 at twice
# (or, for an angle, half) it.
_SCORE_STEEPNESS = 4.0


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """What decides whether a face is fit to enrol.

    ``face_size_px``: the box's shorter side in original image pixels. ``sharpness``: variance
    of the Laplacian of the grey (0-255) face box resized to ``SHARPNESS_SIZE`` square.
    ``yaw_deg`` / ``pitch_deg``: head turn from the five points, in approximate degrees
    (yaw > 0: nose towards the image's right; pitch > 0: nose towards the mouth, i.e. looking
    down). ``score``: product of one factor in (0, 1) per property, each 1/2 at its
    threshold: 0.9 and up is a good enrolment photo, under 0.5 fails at least one check.
    """

    face_size_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    score: float

    def as_dict(self) -> dict[str, float]:
        """Rounded, JSON-ready (what the faces table keeps beside the embedding)."""
        return {key: round(float(value), 4) for key, value in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class QualityThresholds:
    """The enrolment gate; defaults chosen from data by ``facesvc eval quality``."""

    min_face_size_px: float = 25.0
    min_sharpness: float = 400.0
    max_yaw_deg: float = 40.0
    max_pitch_deg: float = 30.0

    def problem(self, quality: FaceQuality) -> QualityProblem | None:
        """The first failing check (size, then sharpness, then pose), or None if it passes."""
        if quality.face_size_px < self.min_face_size_px:
            return "face-too-small"
        if quality.sharpness < self.min_sharpness:
            return "face-too-blurry"
        if abs(quality.yaw_deg) > self.max_yaw_deg or abs(quality.pitch_deg) > self.max_pitch_deg:
            return "face-turned-away"
        return None

    def score(
        self, face_size_px: float, sharpness: float, yaw_deg: float, pitch_deg: float
    ) -> float:
        """Product of one factor per property, each 1/2 exactly at its threshold."""
        return (
            _at_least(face_size_px, self.min_face_size_px)
            * _at_least(sharpness, self.min_sharpness)
            * _at_most(abs(yaw_deg), self.max_yaw_deg)
            * _at_most(abs(pitch_deg), self.max_pitch_deg)
        )


DEFAULT_THRESHOLDS = QualityThresholds()


def _at_least(value: float, threshold: float) -> float:
    if value <= 0.0:
        return 0.0
    ratio = float((value / threshold) ** _SCORE_STEEPNESS)
    return ratio / (1.0 + ratio)


def _at_most(value: float, threshold: float) -> float:
    return 1.0 - _at_least(value, threshold)


def face_size(box: Box) -> float:
    """The box's shorter side (pixels)."""
    return float(max(min(box.width, box.height), 0.0))


def sharpness(image: np.ndarray, box: Box, size: int = SHARPNESS_SIZE) -> float:
    """Variance of the (3x3) Laplacian of the grey face box resized to ``size`` square; 0 when
    the box holds no pixel of the image."""
    height, width = image.shape[:2]
    clipped = box.clipped(width, height)
    x0, y0 = math.floor(clipped.x), math.floor(clipped.y)
    x1, y1 = math.ceil(clipped.x + clipped.width), math.ceil(clipped.y + clipped.height)
    region = image[y0:y1, x0:x1]
    if region.size == 0:
        return 0.0
    grey = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    shrinking = grey.shape[0] >= size and grey.shape[1] >= size
    resized = cv2.resize(
        grey.astype(np.float32),
        (size, size),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    return float(cv2.Laplacian(resized, cv2.CV_32F).var())


def pose_angles(five_points: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in approximate degrees from five points in ``FIVE_POINT_NAMES`` order.

    Measured in the face's own frame (x along the eyes), so roll does not count. Degenerate
    points (eyes on top of each other, mouth not below the eyes) read as fully turned (90).
    """
    points = np.asarray(five_points, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    eye_line = right_eye - left_eye
    inter_ocular = float(np.hypot(*eye_line))
    if inter_ocular < 1e-6:
        return 90.0, 0.0
    across = eye_line / inter_ocular
    down = np.array([-across[1], across[0]])
    eyes = (left_eye + right_eye) / 2.0
    mouth = (mouth_left + mouth_right) / 2.0
    eye_to_mouth = float((mouth - eyes) @ down)
    if eye_to_mouth < 1e-6:
        return 0.0, 90.0
    along = float((nose - eyes) @ down) / eye_to_mouth
    midline = eyes + along * (mouth - eyes)  # the face's midline at the nose's height
    offset = float((nose - midline) @ across) / inter_ocular
    yaw = math.degrees(math.atan(YAW_GAIN * offset))
    pitch = math.degrees(math.atan(PITCH_GAIN * (along - PITCH_NEUTRAL)))
    return yaw, pitch


def assess_face(
    image: np.ndarray,
    box: Box,
    five_points: np.ndarray,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
) -> FaceQuality:
    """Size, sharpness, pose and score of one face in ``image`` (RGB or grey uint8).

    ``box`` and ``five_points`` are the pipeline's, in the same image's pixels;
    ``thresholds`` only centre the score (the gate is ``thresholds.problem(quality)``)."""
    size = face_size(box)
    sharp = sharpness(image, box)
    yaw, pitch = pose_angles(five_points)
    return FaceQuality(
        face_size_px=size,
        sharpness=sharp,
        yaw_deg=yaw,
        pitch_deg=pitch,
        score=thresholds.score(size, sharp, yaw, pitch),
    )
