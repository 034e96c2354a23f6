"""Box overlap for matching detections to labelled faces."""

from __future__ import annotations

from collections.abc import Sequence

from facesvc.inference.types import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(width, 0.0) * max(height, 0.0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def best_overlap(boxes: Sequence[Box], target: Box) -> tuple[int, float]:
    """Index of the box overlapping ``target`` most, and that IoU; (-1, 0.0) when none does."""
    best_index, best_iou = -1, 0.0
    for index, box in enumerate(boxes):
        overlap = iou(box, target)
        if overlap > best_iou:
            best_index, best_iou = index, overlap
    return best_index, best_iou
