"""The face pipeline: decode -> detect -> five points (and mesh) -> crop -> embed.

Each stage is a separate call so a use case pays only for what it needs (detection does not
embed; verification embeds one face). Model calls go through the registry's runners; image
work runs in worker threads, so the event loop never waits on pixels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set
from dataclasses import dataclass

import numpy as np

from facesvc.inference.antispoof import antispoof_crop
from facesvc.inference.attributes import Attribute
from facesvc.inference.attributes.chips import (
    dlib_face_chip,
    dlib_points_from_mesh,
    expression_crop,
)
from facesvc.inference.attributes.models import (
    EXPRESSION_LABELS,
    GENDER_LABELS,
    FaceAttributes,
    decode_age,
    decode_label,
)
from facesvc.inference.embedders.onnx import aligned_crop
from facesvc.inference.geometry import face_crop, resize_longest
from facesvc.inference.images import decode_image
from facesvc.inference.landmarks.facemesh import five_points_from_mesh
from facesvc.inference.landmarks.signals import head_pose
from facesvc.inference.registry import ModelRegistry
from facesvc.inference.types import AnalysedFace, Box, Detection
from facesvc.settings import Settings


@dataclass(frozen=True)
class PipelineLimits:
    """How large an image may be decoded, and how it is detected (FACESVC_MAX_IMAGE_PIXELS,
    FACESVC_DETECTION_MAX_SIDE, FACESVC_DETECTION_PAD_BELOW)."""

    max_image_pixels: int
    detection_max_side: int
    detection_pad_below: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineLimits:
        return cls(
            max_image_pixels=settings.max_image_pixels,
            detection_max_side=settings.detection_max_side,
            detection_pad_below=settings.detection_pad_below,
        )


class FacePipeline:
    def __init__(self, registry: ModelRegistry, limits: PipelineLimits) -> None:
        self.registry = registry
        self.limits = limits

    @property
    def embedding_space(self) -> str:
        """What stored faces are matched by: the model's embedding space, shared by its
        variants (frozen graph, TFLite) that give interchangeable embeddings."""
        return self.registry.embedder_spec.embedding_space

    @property
    def embedder_version(self) -> str:
        return self.registry.embedder_spec.version

    async def decode(self, data: bytes) -> np.ndarray:
        return await asyncio.to_thread(decode_image, data, max_pixels=self.limits.max_image_pixels)

    async def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces, largest first, in original image pixels."""
        small, scale = await asyncio.to_thread(
            resize_longest, image, self.limits.detection_max_side
        )
        (detections,) = await self.registry.detector.run([small])
        if not detections and max(small.shape[:2]) <= self.limits.detection_pad_below:
            detections = await self._detect_padded(small)
        if scale != 1.0:
            detections = [_rescale(d, 1.0 / scale) for d in detections]
        height, width = image.shape[:2]
        detections = [d for d in detections if d.box.clipped(width, height).area > 0]
        return sorted(detections, key=lambda d: d.box.area, reverse=True)

    async def _detect_padded(self, image: np.ndarray) -> list[Detection]:
        """Second try for a small photo filled by one face (a passport or LFW-style crop): the
        full-range detector scores such faces just under its cut-off (0.1-0.5 on LFW's 22
        misses); on a canvas twice the size, black around, they score well above it."""
        height, width = image.shape[:2]
        dy, dx = height // 2, width // 2

        def pad() -> np.ndarray:
            canvas = np.zeros((height * 2, width * 2, 3), np.uint8)
            canvas[dy : dy + height, dx : dx + width] = image
            return canvas

        (found,) = await self.registry.detector.run([await asyncio.to_thread(pad)])
        return [_shift(d, dx, dy) for d in found]

    async def landmarks(
        self, image: np.ndarray, detections: list[Detection], *, dense: bool = False
    ) -> list[AnalysedFace]:
        """Five points per face (the detector's own, else from the mesh); mesh when dense."""
        if not detections:
            return []
        need_mesh = dense or not self.registry.detector_gives_five_points
        meshes: list[np.ndarray | None] = [None] * len(detections)
        if need_mesh:
            meshes = list(await self.registry.mesh.run([(image, d) for d in detections]))
        faces = []
        for detection, mesh in zip(detections, meshes, strict=True):
            if detection.five_points is not None:
                five = detection.five_points
            elif mesh is not None:
                five = five_points_from_mesh(mesh)
            else:  # unreachable: need_mesh is set whenever the detector lacks the five points
                raise RuntimeError("no five points for a face")
            faces.append(
                AnalysedFace(detection=detection, five_points=five, mesh=mesh if dense else None)
            )
        return faces

    async def embed(self, image: np.ndarray, faces: list[AnalysedFace]) -> list[AnalysedFace]:
        """Adds an L2-normalised embedding to each face (one batched model call). FaceNet
        crops by the detector's box; an embedder aligned on five points (an operator's ONNX
        ArcFace-style model) gets them from the landmark stage for faces that skipped it."""
        if not faces:
            return faces
        size = self.registry.embedder_input_size
        policy = self.registry.crop_policy
        contract = self.registry.embedder_contract
        aligns = contract is not None and contract.aligns
        if aligns:
            bare = [i for i, f in enumerate(faces) if f.five_points is None]
            if bare:
                marked = await self.landmarks(image, [faces[i].detection for i in bare])
                for i, face in zip(bare, marked, strict=True):
                    faces[i].five_points = face.five_points

        def crop(face: AnalysedFace) -> np.ndarray:
            if aligns:
                return aligned_crop(image, face.points, size)
            return face_crop(image, face.box, policy, size)

        def crops() -> np.ndarray:
            return np.stack([crop(f) for f in faces])

        batch = await asyncio.to_thread(crops)
        vectors = await self.registry.embedder.run(batch)
        for face, vector in zip(faces, vectors, strict=True):
            face.embedding = vector
        return faces

    @property
    def attribute_networks(self) -> frozenset[str]:
        """The attributes whose networks are loaded (pose needs none: it is always there)."""
        return frozenset(self.registry.attributes)

    async def attributes(
        self, image: np.ndarray, faces: list[AnalysedFace], wanted: Set[Attribute]
    ) -> list[FaceAttributes]:
        """The ``wanted`` attributes of each face. Age, gender and pose read the face mesh
        (``landmarks(..., dense=True)``); each network runs once over all the faces."""
        results = [FaceAttributes() for _ in faces]
        if not faces or not wanted:
            return results
        runners = self.registry.attributes
        sizes = {t: int(s.options["input_size"]) for t, s in self.registry.attribute_specs.items()}
        networks = [t for t in ("age", "gender", "expression") if t in wanted]
        for task in networks:
            if task not in runners:
                raise RuntimeError(f"the {task} network is not loaded (FACESVC_ATTRIBUTES)")
        meshes = [face.mesh for face in faces]
        if {"age", "gender", "pose"} & set(wanted) and any(m is None for m in meshes):
            raise ValueError("age, gender and pose need the face mesh: landmarks(dense=True)")

        def crops() -> dict[str, np.ndarray]:
            batches: dict[str, np.ndarray] = {}
            points = [dlib_points_from_mesh(m) for m in meshes if m is not None]
            for task in ("age", "gender"):
                if task in networks:
                    size = sizes[task]
                    batches[task] = np.stack([dlib_face_chip(image, p, size) for p in points])
            if "expression" in networks:
                batches["expression"] = np.stack([expression_crop(image, f.box) for f in faces])
            return batches

        batches = await asyncio.to_thread(crops)
        outputs = await asyncio.gather(*(runners[t].run(batches[t]) for t in networks))
        scores = dict(zip(networks, outputs, strict=True))
        for index, result in enumerate(results):
            if "age" in scores:
                result.age = decode_age(scores["age"][index])
            if "gender" in scores:
                result.gender = decode_label(scores["gender"][index], GENDER_LABELS)
            if "expression" in scores:
                result.expression = decode_label(scores["expression"][index], EXPRESSION_LABELS)
            mesh = meshes[index]
            if "pose" in wanted and mesh is not None:
                result.pose = head_pose(mesh)
        return results

    async def live_scores(self, image: np.ndarray, faces: list[AnalysedFace]) -> list[float] | None:
        """The live probability of each face from the operator's presentation-attack model
        (FACESVC_ANTISPOOF_MODEL); None when none is loaded."""
        runner, contract = self.registry.antispoof, self.registry.antispoof_contract
        if runner is None or contract is None or not faces:
            return None

        def crops() -> np.ndarray:
            return np.stack([antispoof_crop(image, f.box, contract) for f in faces])

        scores = await runner.run(await asyncio.to_thread(crops))
        return [float(v) for v in scores]


def _shift(detection: Detection, dx: float, dy: float) -> Detection:
    def move(points: np.ndarray | None) -> np.ndarray | None:
        return None if points is None else (points - np.array([dx, dy])).astype(np.float32)

    box = detection.box
    return Detection(
        box=Box(box.x - dx, box.y - dy, box.width, box.height),
        score=detection.score,
        keypoints=move(detection.keypoints),
        five_points=move(detection.five_points),
    )


def _rescale(detection: Detection, factor: float) -> Detection:
    def scale(points: np.ndarray | None) -> np.ndarray | None:
        return None if points is None else (points * factor).astype(np.float32)

    return Detection(
        box=detection.box.scaled(factor),
        score=detection.score,
        keypoints=scale(detection.keypoints),
        five_points=scale(detection.five_points),
    )
