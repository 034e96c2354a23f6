"""Plain data passed between the inference stages (no TensorFlow here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Order of the five landmarks everywhere in facesvc. "left" and "right" are as seen in the
# image (left_eye has the smaller x in an upright face), like MTCNN and the CUHK labels.
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in original image pixels."""

    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.width / 2.0, self.y + self.height / 2.0

    def scaled(self, factor: float) -> Box:
        return Box(self.x * factor, self.y * factor, self.width * factor, self.height * factor)

    def clipped(self, width: int, height: int) -> Box:
        x0, y0 = max(self.x, 0.0), max(self.y, 0.0)
        x1, y1 = min(self.x + self.width, float(width)), min(self.y + self.height, float(height))
        return Box(x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0))


@dataclass(frozen=True, slots=True)
class Detection:
    """One face found by a detector.

    ``keypoints`` are whatever the detector gives (BlazeFace: 6, MTCNN: 5, SSD: none), in
    image pixels. ``five_points`` is set when the detector's own points are the standard five
    (in ``FIVE_POINT_NAMES`` order); otherwise the pipeline derives them from the face mesh.
    """

    box: Box
    score: float
    keypoints: np.ndarray | None = None
    five_points: np.ndarray | None = None

    @property
    def eye_angle(self) -> float:
        """Roll of the face in radians, from the detector's eye keypoints (0 when unknown)."""
        points = self.five_points if self.five_points is not None else self.keypoints
        if points is None or len(points) < 2:
            return 0.0
        dx, dy = points[1] - points[0]
        return float(np.arctan2(dy, dx))


@dataclass(slots=True)
class AnalysedFace:
    """A face the pipeline found in a photo (a stored face is ``db.models.Face``): its
    detection, its five points once it went through the landmark stage (recognition needs
    only the box and skips that model), and optionally its mesh and embedding."""

    detection: Detection
    five_points: np.ndarray | None = None
    mesh: np.ndarray | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def box(self) -> Box:
        return self.detection.box

    @property
    def points(self) -> np.ndarray:
        """The five points (eyes, nose, mouth corners); an error for a face that skipped the
        landmark stage."""
        if self.five_points is None:
            raise ValueError("this face has no landmarks: it did not go through the landmark stage")
        return self.five_points
