"""MediaPipe BlazeFace (short or full range) with its anchor decoding and weighted NMS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from facesvc.inference.runtimes.tflite import TFLiteModel
from facesvc.inference.types import Box, Detection

if TYPE_CHECKING:
    from facesvc.inference.runtimes.openvino import OpenVINOModel

_VARIANTS: dict[str, tuple[int, tuple[tuple[int, int], ...]]] = {
    # input size, then (stride, anchors per grid cell) per feature map, as MediaPipe's SSD
    # anchor calculator builds them (short range: strides 8,16,16,16 with 2 anchors per layer)
    "full": (192, ((4, 1),)),
    "short": (128, ((8, 2), (16, 6))),
}


def make_anchors(input_size: int, layers: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], in MediaPipe's SSD anchor order."""
    centres: list[np.ndarray] = []
    for stride, per_cell in layers:
        grid = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cells = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: overlapping boxes are averaged, weighted by score."""
    order = np.argsort(-scores)
    remaining = list(order)
    results: list[tuple[np.ndarray, np.ndarray, float]] = []
    while remaining:
        top = remaining[0]
        ious = _iou(boxes[top], boxes[remaining])
        group = [remaining[i] for i in np.flatnonzero(ious > iou_threshold)]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(axis=0) / weights.sum()
        kps = (keypoints[group] * weights[:, :, None]).sum(axis=0) / weights.sum()
        results.append((box, kps, float(scores[top])))
        remaining = [r for r in remaining if r not in set(group)]
    return results


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with many."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


class BlazeFaceDetector:
    """Keypoints: eye on the image's left, eye on the image's right, nose tip, mouth centre,
    two ears (6 points). The standard five come from the face mesh."""

    provides_five_points = False

    def __init__(
        self,
        path: Path,
        variant: str = "full",
        *,
        min_score: float = 0.5,
        iou_threshold: float = 0.3,
        threads: int = 0,
        runtime: Literal["tflite", "openvino"] = "tflite",
        precision: Literal["f32", "bf16"] = "f32",
    ) -> None:
        self.min_score = min_score
        if variant not in _VARIANTS:
            raise ValueError(f"unknown BlazeFace variant {variant!r}")
        self.input_size, layers = _VARIANTS[variant]
        self.model: TFLiteModel | OpenVINOModel
        if runtime == "openvino":
            from facesvc.inference.runtimes.openvino import OpenVINOModel

            self.model = OpenVINOModel(path, threads=threads, precision=precision, batch=1)
        else:
            self.model = TFLiteModel(path, threads=threads)
        if self.model.input_shape[1] != self.input_size:
            raise ValueError(
                f"{path.name}: input {self.model.input_shape} does not match variant {variant!r}"
            )
        self.anchors = make_anchors(self.input_size, layers)
        self.iou_threshold = iou_threshold
        self._box_out = self.model.output_by_last_dim(16)
        self._score_out = self.model.output_by_last_dim(1)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """Pad to a centred square, resize, scale to [-1, 1].

        Returns (tensor, square side, x padding, y padding) to map results back."""
        height, width = image.shape[:2]
        side = max(height, width)
        pad_x, pad_y = (side - width) / 2.0, (side - height) / 2.0
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[int(pad_y) : int(pad_y) + height, int(pad_x) : int(pad_x) + width] = image
        resized = cv2.resize(
            square, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA
        )
        tensor = (resized.astype(np.float32) / 127.5 - 1.0)[None]
        return tensor, float(side), float(int(pad_x)), float(int(pad_y))

    def predict(self, batch: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(image) for image in batch]

    def detect(self, image: np.ndarray) -> list[Detection]:
        min_score = self.min_score
        tensor, side, pad_x, pad_y = self.preprocess(image)
        outputs = self.model(tensor)
        raw_boxes = outputs[self._box_out].reshape(-1, 16)
        raw_scores = outputs[self._score_out].reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -80.0, 80.0)))
        keep = np.flatnonzero(scores > min_score)
        if keep.size == 0:
            return []
        size = float(self.input_size)
        raw = raw_boxes[keep] / size
        anchors = self.anchors[keep]
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        w, h = raw[:, 2], raw[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kps = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None, :]
        detections = []
        for box, points, score in weighted_nms(boxes, kps, scores[keep], self.iou_threshold):
            # normalised square coordinates -> original image pixels
            x0, y0, x1, y1 = box * side - np.array([pad_x, pad_y, pad_x, pad_y])
            pixels = points * side - np.array([pad_x, pad_y])
            detections.append(
                Detection(
                    box=Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                    score=score,
                    keypoints=pixels.astype(np.float32),
                )
            )
        return detections
