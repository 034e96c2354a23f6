"""SSD detectors exported by the TF object detection API, as the seed tutorial used them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesvc.inference.graphs import load_frozen_graph
from facesvc.inference.types import Box, Detection


class SSDGraphDetector:
    """``image_tensor:0`` uint8 [1, H, W, 3] -> normalised [ymin, xmin, ymax, xmax] boxes,
    scores and a count. It has no keypoints: the five points come from the face mesh."""

    provides_five_points = False

    def __init__(
        self,
        path: Path,
        *,
        image_tensor: str = "image_tensor:0",
        boxes: str = "detection_boxes:0",
        scores: str = "detection_scores:0",
        count: str = "num_detections:0",
        min_score: float = 0.5,
    ) -> None:
        self.min_score = min_score
        import tensorflow as tf

        self._tf = tf
        self._fn = load_frozen_graph(path, [image_tensor], [boxes, scores, count])

    def predict(self, batch: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(image) for image in batch]

    def detect(self, image: np.ndarray) -> list[Detection]:
        min_score = self.min_score
        height, width = image.shape[:2]
        boxes, scores, count = self._fn(self._tf.constant(image[None], dtype=self._tf.uint8))
        n = int(np.asarray(count).reshape(-1)[0])
        detections = []
        for (y0, x0, y1, x1), score in zip(
            np.asarray(boxes)[0][:n], np.asarray(scores)[0][:n], strict=True
        ):
            if score < min_score:
                continue
            box = Box(
                float(x0 * width),
                float(y0 * height),
                float((x1 - x0) * width),
                float((y1 - y0) * height),
            )
            detections.append(Detection(box=box, score=float(score)))
        return detections
