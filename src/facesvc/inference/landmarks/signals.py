"""What a 468-point face mesh says about a face's state: eye and mouth openness, head pose.

Liveness challenges (blink, open mouth, turn) and the pose attribute read these. Points are
MediaPipe's canonical face-model indices; every measure is a ratio or an angle, so it does
not depend on the face's size in the photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facesvc.inference.landmarks.facemesh import (
    IMAGE_LEFT_EYE,
    IMAGE_RIGHT_EYE,
    MOUTH_IMAGE_LEFT,
    MOUTH_IMAGE_RIGHT,
)

# Eye aspect ratio points (Soukupova & Cech 2016, on the mesh): corner, upper lid x2, corner,
# lower lid x2. Image-left eye is the subject's right eye.
_EAR_IMAGE_LEFT = (33, 160, 158, 133, 153, 144)
_EAR_IMAGE_RIGHT = (362, 385, 387, 263, 373, 380)
# Inner lips (upper, lower) and the inner mouth corners.
_INNER_LIP_UPPER, _INNER_LIP_LOWER = 13, 14
_INNER_MOUTH_LEFT, _INNER_MOUTH_RIGHT = 78, 308


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Degrees. ``yaw`` > 0: the nose points towards the image's right (the subject's own
    left, for a camera that does not mirror); ``pitch`` > 0: looking down; ``roll`` > 0:
    the eye line turns clockwise in the image (image-right eye lower)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, slots=True)
class FaceSignals:
    """``eye_openness``: the mean eye aspect ratio of both eyes (lid gap over eye width; about
    0.25-0.35 open, under ~0.15 closed). ``mouth_openness``: inner-lip gap over mouth width
    (about 0 closed, over ~0.3 wide open)."""

    eye_openness: float
    mouth_openness: float
    pose: HeadPose


def _dist(points: np.ndarray, a: int, b: int) -> float:
    return float(np.hypot(*(points[a] - points[b])))


def _eye_aspect_ratio(xy: np.ndarray, idx: tuple[int, int, int, int, int, int]) -> float:
    p1, p2, p3, p4, p5, p6 = idx
    width = _dist(xy, p1, p4)
    if width <= 0:
        return 0.0
    return (_dist(xy, p2, p6) + _dist(xy, p3, p5)) / (2.0 * width)


def head_pose(mesh: np.ndarray) -> HeadPose:
    """Yaw and pitch are the depth slopes of the eye line and of the eyes-to-mouth line (the
    mesh's own 3-D points); roll is the eye line's angle in the image."""
    points = np.asarray(mesh, dtype=np.float64)
    left = points[list(IMAGE_LEFT_EYE)].mean(axis=0)
    right = points[list(IMAGE_RIGHT_EYE)].mean(axis=0)
    mouth = (points[MOUTH_IMAGE_LEFT] + points[MOUTH_IMAGE_RIGHT]) / 2.0
    across = right - left
    down = mouth - (left + right) / 2.0
    return HeadPose(
        yaw=math.degrees(math.atan2(across[2], math.hypot(across[0], across[1]))),
        pitch=math.degrees(math.atan2(down[2], math.hypot(down[0], down[1]))),
        roll=math.degrees(math.atan2(across[1], across[0])),
    )


def face_signals(mesh: np.ndarray) -> FaceSignals:
    """Openness of eyes and mouth and the head pose of one (468, 3) mesh."""
    xy = np.asarray(mesh, dtype=np.float64)[:, :2]
    eyes = (_eye_aspect_ratio(xy, _EAR_IMAGE_LEFT) + _eye_aspect_ratio(xy, _EAR_IMAGE_RIGHT)) / 2
    mouth_width = _dist(xy, _INNER_MOUTH_LEFT, _INNER_MOUTH_RIGHT)
    mouth = _dist(xy, _INNER_LIP_UPPER, _INNER_LIP_LOWER) / mouth_width if mouth_width > 0 else 0.0
    return FaceSignals(eye_openness=eyes, mouth_openness=mouth, pose=head_pose(mesh))
