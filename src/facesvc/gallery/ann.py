"""Approximate nearest-neighbour search (FAISS HNSW) for large galleries.

Optional (``pip install 'facesvc[ann]'``, ``FACESVC_GALLERY_BACKEND=hnsw``). The exact
matrix in GalleryIndex stays the source; this graph only proposes candidates, which are then
scored exactly. HNSW cannot delete, so removed faces are tombstoned and filtered, and the
graph is rebuilt once a fifth of it is dead.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np


class HNSWIndex:
    def __init__(
        self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 64
    ) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "FACESVC_GALLERY_BACKEND=hnsw needs FAISS: pip install 'facesvc[ann]'"
            ) from exc
        self._faiss: Any = faiss
        self.dim, self.m = dim, m
        self.ef_construction, self.ef_search = ef_construction, ef_search
        self._index: Any = None
        self._face_of: list[uuid.UUID] = []  # graph id -> face id
        self._dead: set[int] = set()
        self._id_of: dict[uuid.UUID, int] = {}

    def _new(self) -> Any:
        index = self._faiss.IndexHNSWFlat(self.dim, self.m, self._faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def rebuild(self, face_ids: list[uuid.UUID], vectors: np.ndarray) -> None:
        self._index = self._new()
        if len(face_ids):
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._face_of = list(face_ids)
        self._id_of = {face: i for i, face in enumerate(face_ids)}
        self._dead = set()

    def add(self, face_id: uuid.UUID, vector: np.ndarray) -> None:
        if self._index is None:
            self._index = self._new()
        self._index.add(np.asarray(vector, np.float32).reshape(1, -1))
        self._id_of[face_id] = len(self._face_of)
        self._face_of.append(face_id)

    def remove(self, face_id: uuid.UUID) -> None:
        graph_id = self._id_of.pop(face_id, None)
        if graph_id is not None:
            self._dead.add(graph_id)

    @property
    def needs_rebuild(self) -> bool:
        return len(self._dead) > max(1000, len(self._face_of) // 5)

    def candidates(self, query: np.ndarray, pool: int) -> list[uuid.UUID]:
        """Face ids of about ``pool`` approximate nearest neighbours, best first."""
        if self._index is None or self._index.ntotal == 0:
            return []
        want = min(pool + len(self._dead), self._index.ntotal)
        self._index.hnsw.efSearch = max(self.ef_search, want)
        _, ids = self._index.search(np.asarray(query, np.float32).reshape(1, -1), want)
        return [self._face_of[i] for i in ids[0] if i >= 0 and i not in self._dead]
