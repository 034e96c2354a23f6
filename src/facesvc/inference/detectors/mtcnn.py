"""MTCNN (the ``mtcnn`` package, weights inside its wheel): slower, finds smaller faces,
and gives the five standard points itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from facesvc.inference.types import FIVE_POINT_NAMES, Box, Detection


class MTCNNDetector:
    provides_five_points = True

    def __init__(self, device: str = "/CPU:0", *, min_score: float = 0.5) -> None:
        self.min_score = min_score
        try:
            from mtcnn import MTCNN
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "the MTCNN detector needs the 'mtcnn' package: pip install 'facesvc[mtcnn]'"
            ) from exc
        # min_face_size above ~20 silently returns nothing in mtcnn 1.0: keep its default and
        # let the pipeline downscale large images instead.
        self._mtcnn: Any = MTCNN(device=device.lstrip("/"))

    def predict(self, batch: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(image) for image in batch]

    def detect(self, image: np.ndarray) -> list[Detection]:
        min_score = self.min_score
        detections = []
        for face in self._mtcnn.detect_faces(image):
            if float(face["confidence"]) < min_score:
                continue
            x, y, w, h = (float(v) for v in face["box"])
            points = np.array([face["keypoints"][k] for k in FIVE_POINT_NAMES], dtype=np.float32)
            detections.append(
                Detection(
                    box=Box(x, y, w, h),
                    score=float(face["confidence"]),
                    keypoints=points,
                    five_points=points,
                )
            )
        return detections
