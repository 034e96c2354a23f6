"""The image with what was found drawn on it: boxes, scores, five landmarks, the mesh."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import cv2
import numpy as np

from facesvc.inference.types import AnalysedFace
from facesvc.services.analysis import FaceAnalysisService

# RGB; one colour per landmark in FIVE_POINT_NAMES order (eyes, nose, mouth corners).
BOX_COLOUR = (0, 220, 0)
MESH_COLOUR = (0, 200, 255)
FIVE_POINT_COLOURS = ((255, 40, 40), (255, 40, 40), (255, 200, 0), (220, 0, 220), (220, 0, 220))


@dataclass(frozen=True)
class AnnotatedImage:
    png: bytes
    width: int
    height: int
    faces: int


class FaceAnnotationService:
    def __init__(self, analysis: FaceAnalysisService) -> None:
        self.pipeline = analysis.pipeline

    async def annotate(self, data: bytes, *, dense: bool = False) -> AnnotatedImage:
        """Detect every face and return the image as PNG with each one drawn."""
        image = await self.pipeline.decode(data)
        detections = await self.pipeline.detect(image)
        faces = await self.pipeline.landmarks(image, detections, dense=dense)
        png = await asyncio.to_thread(render_png, image, faces)
        height, width = image.shape[:2]
        return AnnotatedImage(png=png, width=width, height=height, faces=len(faces))


def draw_faces(image_rgb: np.ndarray, faces: list[AnalysedFace]) -> np.ndarray:
    """A copy of the image with boxes, scores, five points and (when present) the mesh."""
    canvas = np.ascontiguousarray(image_rgb).copy()
    height, width = canvas.shape[:2]
    # Line widths and radii grow with the image so they stay visible on large photos.
    unit = max(1, round(max(height, width) / 400))
    for face in faces:
        if face.mesh is not None:
            for x, y in face.mesh[:, :2]:
                cv2.circle(canvas, (round(float(x)), round(float(y))), unit, MESH_COLOUR, -1)
        box = face.box
        top_left = (round(box.x), round(box.y))
        bottom_right = (round(box.x + box.width), round(box.y + box.height))
        cv2.rectangle(canvas, top_left, bottom_right, BOX_COLOUR, 2 * unit)
        for (x, y), colour in zip(face.points, FIVE_POINT_COLOURS, strict=True):
            cv2.circle(canvas, (round(float(x)), round(float(y))), 2 * unit + 1, colour, -1)
        label_y = top_left[1] - 4 * unit if top_left[1] > 12 * unit else bottom_right[1] + 12 * unit
        cv2.putText(
            canvas,
            f"{face.detection.score:.2f}",
            (top_left[0], label_y),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * unit,
            BOX_COLOUR,
            unit,
            cv2.LINE_AA,
        )
    return canvas


def render_png(image_rgb: np.ndarray, faces: list[AnalysedFace]) -> bytes:
    drawn = draw_faces(image_rgb, faces)
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buffer.tobytes())
