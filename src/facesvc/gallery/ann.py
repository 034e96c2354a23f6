"""Approximate nearest-neighbour search (FAISS) for large galleries.

Optional (``pip install 'facesvc[ann]'``, ``FACESVC_GALLERY_BACKEND=ivf`` or ``hnsw``). The
exact matrix in GalleryIndex stays the source; an ANN structure only proposes candidates,
which are then scored exactly.

- ``ivf`` (IVF-Flat, the one to use): k-means cells over the faces, a query scans the
  ``nprobe`` nearest cells. Builds in seconds at 1e6 faces and deletes for real; new faces go
  into the trained cells, and the cells are retrained on each full load (start-up, reload).
- ``hnsw``: a navigable graph. Faster queries per recall on clustered data, but its build at
  1e6 random 128-d templates took 14 minutes here and it cannot delete: removed faces are
  tombstoned and filtered, and the graph is rebuilt once a fifth of it is dead.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Protocol

import numpy as np


class ANNIndex(Protocol):
    """What GalleryIndex needs from an approximate backend."""

    dim: int  # of the vectors; set before the first build

    def empty_like(self) -> ANNIndex: ...
    def rebuild(self, face_ids: list[uuid.UUID], vectors: np.ndarray) -> None: ...
    def add(self, face_id: uuid.UUID, vector: np.ndarray) -> None: ...
    def remove(self, face_id: uuid.UUID) -> None: ...
    @property
    def needs_rebuild(self) -> bool: ...
    @property
    def ready(self) -> bool: ...
    def candidates(self, query: np.ndarray, pool: int) -> list[uuid.UUID]: ...


def _faiss(backend: str) -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            f"FACESVC_GALLERY_BACKEND={backend} needs FAISS: pip install 'facesvc[ann]'"
        ) from exc
    return faiss


class HNSWIndex:
    def __init__(
        self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 64
    ) -> None:
        self._faiss: Any = _faiss("hnsw")
        self.dim, self.m = dim, m
        self.ef_construction, self.ef_search = ef_construction, ef_search
        self._index: Any = None
        self._face_of: list[uuid.UUID] = []  # graph id -> face id
        self._dead: set[int] = set()
        self._id_of: dict[uuid.UUID, int] = {}

    def empty_like(self) -> HNSWIndex:
        return HNSWIndex(self.dim, self.m, self.ef_construction, self.ef_search)

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
    def ready(self) -> bool:
        return self._index is not None

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


class IVFIndex:
    """IVF-Flat over inner products. Cells: about sqrt(N) (64 to 4,096), trained on up to 64
    faces per cell; until ``min_train`` faces exist nothing is trained and the exact search
    (GalleryIndex below its ann_min_size) answers. A query scans ``nprobe`` cells: 64 of
    1,000 at 1e6 random templates gave recall@1 0.995 in 4 ms (bench/gallery_search.py)."""

    def __init__(self, dim: int, nprobe: int = 64, min_train: int = 4_096) -> None:
        self._faiss: Any = _faiss("ivf")
        self.dim, self.nprobe, self.min_train = dim, nprobe, min_train
        self._index: Any = None
        self._face_of: dict[int, uuid.UUID] = {}  # faiss id -> face id
        self._id_of: dict[uuid.UUID, int] = {}
        self._next_id = 0
        self._untrained = 0  # faces added while there were too few to train on

    def empty_like(self) -> IVFIndex:
        return IVFIndex(self.dim, self.nprobe, self.min_train)

    @staticmethod
    def cells_for(count: int) -> int:
        return int(min(4_096, max(64, round(math.sqrt(count)))))

    def rebuild(self, face_ids: list[uuid.UUID], vectors: np.ndarray) -> None:
        self._index, self._face_of, self._id_of, self._next_id = None, {}, {}, 0
        self._untrained = len(face_ids)
        if len(face_ids) < self.min_train:
            return
        faiss = self._faiss
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        cells = self.cells_for(len(face_ids))
        index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(self.dim), self.dim, cells, faiss.METRIC_INNER_PRODUCT
        )
        sample = vectors
        if len(vectors) > 64 * cells:  # a fixed-seed sample: the same faces give the same cells
            rows = np.random.default_rng(0).choice(len(vectors), 64 * cells, replace=False)
            sample = vectors[np.sort(rows)]
        index.train(sample)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids by id, cheaply
        ids = np.arange(len(face_ids), dtype=np.int64)
        index.add_with_ids(vectors, ids)
        index.nprobe = min(self.nprobe, cells)
        self._index = index
        self._face_of = dict(enumerate(face_ids))
        self._id_of = {face: i for i, face in enumerate(face_ids)}
        self._next_id, self._untrained = len(face_ids), 0

    def add(self, face_id: uuid.UUID, vector: np.ndarray) -> None:
        if self._index is None:
            self._untrained += 1  # trained (with this face) by the rebuild needs_rebuild asks for
            return
        faiss_id = self._next_id
        self._next_id += 1
        self._index.add_with_ids(
            np.asarray(vector, np.float32).reshape(1, -1), np.array([faiss_id], np.int64)
        )
        self._face_of[faiss_id] = face_id
        self._id_of[face_id] = faiss_id

    def remove(self, face_id: uuid.UUID) -> None:
        if self._index is None:
            self._untrained = max(0, self._untrained - 1)
            return
        faiss_id = self._id_of.pop(face_id, None)
        if faiss_id is not None:
            self._index.remove_ids(self._faiss.IDSelectorArray(np.array([faiss_id], np.int64)))
            del self._face_of[faiss_id]

    @property
    def ready(self) -> bool:
        return self._index is not None

    @property
    def needs_rebuild(self) -> bool:
        """Only before the first training: later faces go into the trained cells."""
        return self._index is None and self._untrained >= self.min_train

    def candidates(self, query: np.ndarray, pool: int) -> list[uuid.UUID]:
        if self._index is None or self._index.ntotal == 0:
            return []
        want = min(pool, self._index.ntotal)
        _, ids = self._index.search(np.asarray(query, np.float32).reshape(1, -1), want)
        return [self._face_of[i] for i in ids[0] if i >= 0]
