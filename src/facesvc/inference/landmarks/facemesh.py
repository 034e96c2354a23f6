"""MediaPipe face mesh: 468 (x, y, z) points from a rotated face crop, and the five points."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesvc.inference.geometry import apply_matrix, crop_matrix, warp_crop
from facesvc.inference.runtimes.tflite import TFLiteModel
from facesvc.inference.types import Detection

# Mesh indices of the eye contours and mouth corners (MediaPipe's canonical face model).
# The subject's right eye is on the image's left.
IMAGE_LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
IMAGE_RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
NOSE_TIP = 1
MOUTH_IMAGE_LEFT, MOUTH_IMAGE_RIGHT = 61, 291

MESH_POINTS = 468


def five_points_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(5, 2) points in ``FIVE_POINT_NAMES`` order from a (468, 3) mesh."""
    xy = mesh[:, :2]
    return np.stack(
        [
            xy[list(IMAGE_LEFT_EYE)].mean(axis=0),
            xy[list(IMAGE_RIGHT_EYE)].mean(axis=0),
            xy[NOSE_TIP],
            xy[MOUTH_IMAGE_LEFT],
            xy[MOUTH_IMAGE_RIGHT],
        ]
    ).astype(np.float32)


class FaceMeshModel:
    # MediaPipe crops 1.5x the detection box, rotated so the eyes are level.
    roi_scale = 1.5

    def __init__(self, path: Path, threads: int = 0) -> None:
        self.model = TFLiteModel(path, threads=threads)
        self.input_size = self.model.input_shape[1]
        self._mesh_out = self.model.output_by_last_dim(MESH_POINTS * 3)

    def roi(self, detection: Detection) -> np.ndarray:
        """Matrix mapping crop pixels to image pixels for this detection."""
        box = detection.box
        side = max(box.width, box.height) * self.roi_scale
        return crop_matrix(box.center, (side, side), self.input_size, detection.eye_angle)

    def predict_one(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """(468, 3) mesh in image pixels; z is in the same pixel scale as x."""
        matrix = self.roi(detection)
        crop = warp_crop(image, matrix, self.input_size)
        tensor = (crop.astype(np.float32) / 255.0)[None]
        raw = self.model(tensor)[self._mesh_out].reshape(MESH_POINTS, 3)
        # continuous crop coordinates -> pixel indices -> continuous image coordinates
        xy = apply_matrix(matrix, raw[:, :2] - 0.5) + 0.5
        scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
        z = raw[:, 2:3] * scale
        return np.hstack([xy, z]).astype(np.float32)

    def predict(self, batch: list[tuple[np.ndarray, Detection]]) -> list[np.ndarray]:
        return [self.predict_one(image, detection) for image, detection in batch]
