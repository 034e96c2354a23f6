"""Embeddings of evaluation images, cached on disk so evaluations share them and reruns are instant.

One SQLite file (``var/eval_cache/embeddings.sqlite``), keyed by (image path, detector,
embedder). The detector key holds everything that changes which face is found and how it is
cropped (manifest name and version, crop policy, score threshold, detection size); the
embedder key holds the embedder's manifest name and version. A failure to detect is cached
too (no embedding), so it is not retried on every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.sqlite_cache import SqliteCache
from facesvc.inference.pipeline import FacePipeline

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    path TEXT NOT NULL,
    detector TEXT NOT NULL,
    embedder TEXT NOT NULL,
    faces INTEGER NOT NULL,      -- faces found in the image
    embedding BLOB,              -- float32 bytes of the chosen face; NULL when no face
    PRIMARY KEY (path, detector, embedder)
)
"""
_INSERT = (
    "INSERT OR REPLACE INTO embeddings (path, detector, embedder, faces, embedding) "
    "VALUES (?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class CachedFace:
    """The evaluation's face for one image: its embedding (None: no face) and the face count."""

    embedding: np.ndarray | None
    faces: int


def pipeline_keys(pipeline: FacePipeline) -> tuple[str, str]:
    """(detector key, embedder key) describing what produced an embedding."""
    registry = pipeline.registry
    settings = registry.settings
    detector = registry.detector_spec
    crop = registry.crop_policy
    detector_key = (
        f"{detector.name}:{detector.version}:crop={crop}:"
        f"min_score={settings.detection_min_score}:max_side={settings.detection_max_side}:"
        f"pad_below={settings.detection_pad_below}"
    )
    embedder = registry.embedder_spec
    return detector_key, f"{embedder.name}:{embedder.version}"


class EmbeddingCache(SqliteCache):
    """Read and write cached faces for one (detector, embedder) pair (``put`` is buffered:
    see SqliteCache). Use from one thread."""

    def __init__(self, path: Path, detector: str, embedder: str, *, flush_every: int = 200) -> None:
        super().__init__(path, _SCHEMA, _INSERT, flush_every=flush_every)
        self.detector = detector
        self.embedder = embedder

    @classmethod
    def for_pipeline(cls, directory: Path, pipeline: FacePipeline) -> EmbeddingCache:
        detector, embedder = pipeline_keys(pipeline)
        return cls(directory / "embeddings.sqlite", detector, embedder)

    @staticmethod
    def image_key(path: Path) -> str:
        return str(path.resolve())

    def get_many(self, paths: Iterable[Path]) -> dict[Path, CachedFace]:
        wanted = {self.image_key(p): p for p in paths}
        found: dict[Path, CachedFace] = {}
        rows = self.read(
            "SELECT path, faces, embedding FROM embeddings WHERE detector = ? AND embedder = ?",
            (self.detector, self.embedder),
        )
        for key, faces, blob in rows:
            path = wanted.get(key)
            if path is not None:
                vector = None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
                found[path] = CachedFace(vector, int(faces))
        return found

    def put(self, path: Path, face: CachedFace) -> None:
        blob = None if face.embedding is None else face.embedding.astype(np.float32).tobytes()
        self.write((self.image_key(path), self.detector, self.embedder, face.faces, blob))


@contextmanager
def embedding_progress(
    pipeline: FacePipeline, cache_dir: Path | None, total: int
) -> Iterator[tuple[EmbeddingCache | None, ProgressReporter]]:
    """The embedding cache in ``cache_dir`` (None: no cache), closed on the way out, and the
    progress of embedding ``total`` LFW images."""
    cache: AbstractContextManager[EmbeddingCache | None] = (
        nullcontext() if cache_dir is None else EmbeddingCache.for_pipeline(cache_dir, pipeline)
    )
    with cache as opened, ProgressReporter("embedding LFW images", total) as progress:
        yield opened, progress
