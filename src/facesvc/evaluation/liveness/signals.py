"""Step 1 and 2 of the liveness evaluation: every LFW photo's centre face measured once
(face-mesh signals and embedding, cached in an SQLite file) and their distributions."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesvc.evaluation.cache import pipeline_keys
from facesvc.evaluation.lfw import nearest_centre
from facesvc.evaluation.sqlite_cache import SqliteCache
from facesvc.inference.landmarks.signals import face_signals
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.quality import YAW_GAIN
from facesvc.inference.types import Detection

_SIGNALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS signals (
    name TEXT NOT NULL,          -- LFW-relative path
    pipeline TEXT NOT NULL,      -- detector, mesh and embedder keys
    faces INTEGER NOT NULL,      -- faces found; 0: no face (the rest NULL)
    centre_is_largest INTEGER,   -- the centre face is the one a session would measure
    eye REAL, mouth REAL, yaw REAL, pitch REAL, roll REAL,
    detector_yaw REAL,           -- from the detector's keypoints, not the mesh: a second opinion
    embedding BLOB,
    PRIMARY KEY (name, pipeline)
)
"""
_SIGNALS_INSERT = "INSERT OR REPLACE INTO signals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class PhotoSignals:
    """One photo's centre face (LFW's person): its mesh signals and embedding."""

    name: str
    faces: int
    centre_is_largest: bool = False
    eye: float = float("nan")
    mouth: float = float("nan")
    yaw: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")
    detector_yaw: float = float("nan")
    embedding: np.ndarray | None = None

    @property
    def found(self) -> bool:
        return self.faces > 0 and self.embedding is not None


def signals_key(pipeline: FacePipeline) -> str:
    detector, embedder = pipeline_keys(pipeline)
    mesh = pipeline.registry.mesh_spec
    return f"{detector}|{mesh.name}:{mesh.version}|{embedder}"


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class SignalCache(SqliteCache):
    """Measured photos in one SQLite file, keyed by (LFW-relative name, pipeline key)."""

    def __init__(self, path: Path, key: str) -> None:
        super().__init__(path, _SIGNALS_SCHEMA, _SIGNALS_INSERT)
        self.key = key

    def get_all(self) -> dict[str, PhotoSignals]:
        rows = self.read(
            "SELECT name, faces, centre_is_largest, eye, mouth, yaw, pitch, roll, detector_yaw, "
            "embedding FROM signals WHERE pipeline = ?",
            (self.key,),
        )
        out = {}
        for name, faces, largest, eye, mouth, yaw, pitch, roll, detector_yaw, blob in rows:
            if faces == 0:
                out[name] = PhotoSignals(name, 0)
                continue
            vector = np.frombuffer(blob, dtype=np.float32).copy()
            out[name] = PhotoSignals(
                name,
                int(faces),
                bool(largest),
                eye,
                mouth,
                yaw,
                pitch,
                roll,
                math.nan if detector_yaw is None else detector_yaw,
                vector,
            )
        return out

    def put(self, photo: PhotoSignals) -> None:
        self.write(
            (
                photo.name,
                self.key,
                photo.faces,
                int(photo.centre_is_largest),
                _or_none(photo.eye),
                _or_none(photo.mouth),
                _or_none(photo.yaw),
                _or_none(photo.pitch),
                _or_none(photo.roll),
                _or_none(photo.detector_yaw),
                None if photo.embedding is None else photo.embedding.astype(np.float32).tobytes(),
            )
        )


async def measure_photo(pipeline: FacePipeline, name: str, data: bytes) -> PhotoSignals:
    """The centre face's signals and embedding (as ``evaluation.lfw.centre_face`` picks it)."""
    image = await pipeline.decode(data)
    detections = await pipeline.detect(image)
    if not detections:
        return PhotoSignals(name, 0)
    centre = nearest_centre(detections, image.shape[1], image.shape[0])
    faces = await pipeline.landmarks(image, [centre], dense=True)
    (face,) = await pipeline.embed(image, faces)
    if face.mesh is None or face.embedding is None:  # unreachable: dense, embedded
        raise RuntimeError("the face has no mesh or embedding")
    signals = face_signals(face.mesh)
    return PhotoSignals(
        name,
        len(detections),
        centre is detections[0],
        signals.eye_openness,
        signals.mouth_openness,
        signals.pose.yaw,
        signals.pose.pitch,
        signals.pose.roll,
        detector_yaw(centre),
        face.embedding,
    )


def detector_yaw(detection: Detection) -> float:
    """Approximate yaw in degrees from BlazeFace's own keypoints (eyes, nose tip), not the
    mesh: the nose's offset from the eyes' midpoint along the eye line, over the eye distance,
    through the five-point gain of ``inference.quality``. > 0: nose towards the image's right,
    the mesh's sign. NaN without keypoints."""
    points = detection.keypoints
    if points is None or len(points) < 3:
        return math.nan
    image_left_eye, image_right_eye, nose = (np.asarray(p, dtype=np.float64) for p in points[:3])
    across = image_right_eye - image_left_eye
    distance = float(np.hypot(*across))
    if distance < 1e-6:
        return math.nan
    offset = float((nose - (image_left_eye + image_right_eye) / 2.0) @ across) / distance**2
    return math.degrees(math.atan(YAW_GAIN * offset))


async def measure_photos(
    pipeline: FacePipeline,
    root: Path,
    names: Iterable[str],
    cache: SignalCache | None,
    *,
    progress: Callable[[int], None] | None = None,
    skipped: Callable[[int], None] | None = None,
    concurrency: int = 4,
) -> dict[str, PhotoSignals]:
    """Every photo's centre face, from the cache when there (models load only if needed)."""
    names = list(dict.fromkeys(names))
    known = cache.get_all() if cache is not None else {}
    out = {name: known[name] for name in names if name in known}
    report = skipped or progress
    if out and report is not None:
        report(len(out))
    todo = [name for name in names if name not in out]
    if todo and not pipeline.registry.ready:
        await pipeline.registry.start()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with semaphore:
            data = await asyncio.to_thread((root / name).read_bytes)
            photo = await measure_photo(pipeline, name, data)
        out[name] = photo
        if cache is not None:
            cache.put(photo)
        if progress:
            progress(1)

    try:
        await asyncio.gather(*(one(name) for name in todo))
    finally:
        if cache is not None:
            cache.flush()
    return out


# ---- distributions ----------------------------------------------------------------------

PERCENTILES = (0.1, 0.5, 1, 2, 5, 10, 25, 50, 75, 90, 95, 98, 99, 99.5, 99.9)


def percentiles(values: Iterable[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return {}
    points = np.percentile(array, PERCENTILES)
    return {
        "count": int(array.size),
        **{f"p{p:g}": round(float(v), 4) for p, v in zip(PERCENTILES, points, strict=True)},
    }


def single_face(photos: dict[str, PhotoSignals]) -> list[PhotoSignals]:
    """Photos a session could use: exactly one face found (so it is LFW's person and the one
    ``observe_frame`` measures)."""
    return [p for p in photos.values() if p.faces == 1 and p.found]
