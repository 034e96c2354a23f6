"""GalleryIndex: every stored embedding of the active model in one float32 matrix.

SQL stays the source of truth. The index is loaded from it at start-up and kept in step by
applying each committed change (enrol, delete face, delete user) after its transaction
commits. Every such transaction also bumps the ``gallery_state.version`` row; before a
search the index compares that version with its own and reloads when another worker (or a
lost update) changed the gallery, so several workers on one PostgreSQL database agree.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import NamedTuple

import numpy as np

from facesvc.gallery.ann import ANNIndex
from facesvc.gallery.backend import Hit

__all__ = ["GalleryChange", "GalleryIndex", "Hit"]

log = logging.getLogger(__name__)


class GalleryChange(NamedTuple):
    """One committed change: ("add", face id, user id, vector, tenant id),
    ("remove_face", face id) or ("remove_user", user id)."""

    kind: str
    key: uuid.UUID
    user_id: uuid.UUID | None = None
    vector: np.ndarray | None = None
    tenant_id: uuid.UUID | None = None


class GalleryIndex:
    """Faces of every tenant in one matrix; each search is restricted to one tenant's rows."""

    def __init__(
        self,
        model_name: str,
        dim: int = 128,
        ann: ANNIndex | None = None,
        ann_min_size: int = 20_000,
    ) -> None:
        self.model_name = model_name
        # Below ann_min_size faces the exact matrix product is as fast and always right.
        self.ann = ann
        self.ann_min_size = ann_min_size
        self.dim = dim
        self._vectors = np.zeros((0, dim), np.float32)
        self._count = 0
        self._face_ids: list[uuid.UUID] = []
        self._user_ids: list[uuid.UUID] = []
        # each row's tenant as a small integer code, so a search masks other tenants cheaply
        self._tenant_codes = np.zeros(0, np.int32)
        self._code_of: dict[uuid.UUID | None, int] = {}
        self._faces_per_code: Counter[int] = Counter()  # kept in step: no O(N) count per query
        self._row_of: dict[uuid.UUID, int] = {}
        self.version = -1  # the gallery_state version this index reflects; -1: not loaded
        self.reloads = 0
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return self._count

    def use_dimension(self, dim: int) -> None:
        """Size the index for the loaded embedder's vectors (read from the model at start-up,
        before the gallery is loaded: a 64-d or 512-d model is stored and searched as such)."""
        if dim <= 0 or dim == self.dim:
            return
        if self._count:
            raise ValueError(f"the gallery holds {self.dim}-d faces; the embedder gives {dim}-d")
        self.dim = dim
        self._vectors = np.zeros((0, dim), np.float32)
        if self.ann is not None:
            self.ann.dim = dim

    @property
    def users(self) -> int:
        return len(set(self._user_ids))

    # --- bulk load -------------------------------------------------------------------
    def replace(
        self,
        face_ids: list[uuid.UUID],
        user_ids: list[uuid.UUID],
        vectors: np.ndarray,
        version: int,
        tenant_ids: list[uuid.UUID] | None = None,
        ann: ANNIndex | None = None,
    ) -> None:
        """Load every face at once; ``tenant_ids`` None puts them all in one tenant (None).
        ``ann``: the ANN structure over exactly these faces, from :meth:`prepare_ann` (built
        off the event loop); without it the ANN backend is rebuilt here."""
        if vectors.size and vectors.shape[1] != self.dim:
            self.dim = int(vectors.shape[1])
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self._count = len(face_ids)
        tenants = tenant_ids if tenant_ids is not None else [None] * len(face_ids)
        self._tenant_codes = np.array([self._code(t) for t in tenants], np.int32)
        self._faces_per_code = Counter(self._tenant_codes.tolist())
        self._face_ids = list(face_ids)
        self._user_ids = list(user_ids)
        self._row_of = {face_id: row for row, face_id in enumerate(face_ids)}
        self.version = version
        self.reloads += 1
        if self.ann is not None:
            if ann is not None:
                self.ann = ann
            else:
                self.ann.rebuild(self._face_ids, self._vectors[: self._count])

    def prepare_ann(self, face_ids: list[uuid.UUID], vectors: np.ndarray) -> ANNIndex | None:
        """A new ANN structure over these faces for :meth:`replace`, None without an ANN
        backend. Touches no state of this index, so it can run in a worker thread (a build
        at 1e6 faces takes seconds for IVF, minutes for HNSW)."""
        if self.ann is None:
            return None
        fresh = self.ann.empty_like()
        fresh.rebuild(face_ids, np.asarray(vectors, np.float32).reshape(-1, self.dim))
        return fresh

    # --- incremental changes, applied after their transaction committed ---------------
    def _code(self, tenant_id: uuid.UUID | None) -> int:
        return self._code_of.setdefault(tenant_id, len(self._code_of))

    def apply(self, version: int, change: tuple[object, ...]) -> None:
        """Apply one committed change if it is the next version; otherwise mark stale."""
        if version != self.version + 1:
            log.debug("gallery version %s after %s: will reload", version, self.version)
            self.version = -1
            return
        kind, key, user_id, vector, tenant_id = GalleryChange(*change)  # type: ignore[arg-type]
        if kind == "add" and user_id is not None and vector is not None:
            self._add(key, user_id, vector, tenant_id)
        elif kind == "remove_face":
            self._remove_rows([self._row_of[key]] if key in self._row_of else [])
        elif kind == "remove_user":
            self._remove_rows([r for r in range(self._count) if self._user_ids[r] == key])
        self.version = version

    def _add(
        self,
        face_id: uuid.UUID,
        user_id: uuid.UUID,
        vector: np.ndarray,
        tenant_id: uuid.UUID | None = None,
    ) -> None:
        if face_id in self._row_of:  # already there (a reload that saw this commit): idempotent
            row = self._row_of[face_id]
            self._vectors[row] = vector
            return
        if self._count == len(self._vectors):  # grow geometrically: amortised O(1) appends
            grown = np.zeros((max(16, 2 * len(self._vectors)), self.dim), np.float32)
            grown[: self._count] = self._vectors[: self._count]
            self._vectors = grown
        if self._count >= len(self._tenant_codes):
            codes = np.zeros(max(16, 2 * len(self._tenant_codes)), np.int32)
            codes[: self._count] = self._tenant_codes[: self._count]
            self._tenant_codes = codes
        self._vectors[self._count] = vector
        code = self._code(tenant_id)
        self._tenant_codes[self._count] = code
        self._faces_per_code[code] += 1
        if self.ann is not None:
            self.ann.add(face_id, vector)
        self._face_ids.append(face_id)
        self._user_ids.append(user_id)
        self._row_of[face_id] = self._count
        self._count += 1
        self._rebuild_ann_if_asked()  # IVF: its first training

    def _remove_rows(self, rows: list[int]) -> None:
        for row in sorted(rows, reverse=True):  # swap with the last row: O(1) each
            last = self._count - 1
            removed = self._face_ids[row]
            self._faces_per_code[int(self._tenant_codes[row])] -= 1
            if self.ann is not None:
                self.ann.remove(removed)
            if row != last:
                self._vectors[row] = self._vectors[last]
                self._tenant_codes[row] = self._tenant_codes[last]
                self._face_ids[row] = self._face_ids[last]
                self._user_ids[row] = self._user_ids[last]
                self._row_of[self._face_ids[row]] = row
            self._face_ids.pop()
            self._user_ids.pop()
            del self._row_of[removed]
            self._count -= 1
        self._rebuild_ann_if_asked()  # HNSW: a fifth of the graph is dead

    def _rebuild_ann_if_asked(self) -> None:
        """Rebuild the ANN structure over the current faces when it asks for it. Runs on the
        event loop (inside the after-commit hook); a full reload builds in a thread instead."""
        if self.ann is not None and self.ann.needs_rebuild:
            self.ann.rebuild(self._face_ids, self._vectors[: self._count])

    # --- search ------------------------------------------------------------------------
    def faces_of(self, tenant_id: uuid.UUID | None) -> int:
        """How many faces one tenant has in the index."""
        code = self._code_of.get(tenant_id)
        return 0 if code is None else self._faces_per_code[code]

    def search(
        self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID | None = None
    ) -> list[Hit]:
        """The ``top_k`` users of one tenant by their best face's cosine similarity, best
        first. ``tenant_id`` None searches every row (benchmarks, single-tenant tools); the
        service always passes the caller's tenant."""
        code = self._code_of.get(tenant_id) if tenant_id is not None else None
        if self._count == 0 or (tenant_id is not None and code is None):
            return []
        query = np.asarray(query, np.float32)
        if self.ann is not None and self._count >= self.ann_min_size and self.ann.ready:
            return self._search_ann(self.ann, query, top_k, code)
        scores = self._vectors[: self._count] @ query
        if code is not None and len(self._code_of) > 1:  # other tenants' rows: never found
            scores[self._tenant_codes[: self._count] != code] = -np.inf
        pool = min(self._count, max(top_k * 8, 32))
        while True:
            if pool < self._count:
                candidates = np.argpartition(-scores, pool - 1)[:pool]
                candidates = candidates[np.argsort(-scores[candidates])]
            else:
                candidates = np.argsort(-scores)
            best: dict[uuid.UUID, Hit] = {}
            for row in candidates:
                if not np.isfinite(scores[row]):
                    break  # sorted: only other tenants' rows are left
                user = self._user_ids[row]
                if user not in best:
                    best[user] = Hit(user, self._face_ids[row], float(scores[row]))
                    if len(best) == top_k:
                        break
            # too few distinct users among the pool (many faces per user): widen it
            if len(best) == top_k or pool >= self._count:
                return list(best.values())
            pool = min(self._count, pool * 4)

    def _search_ann(
        self, ann: ANNIndex, query: np.ndarray, top_k: int, code: int | None
    ) -> list[Hit]:
        """ANN proposes faces; each is scored exactly; best face per user of the tenant.

        The proposals are not tenant-aware: a tenant with a small share of a very large
        gallery may get fewer than ``top_k`` candidates (the exact path has no such limit)."""
        best: dict[uuid.UUID, Hit] = {}
        for face_id in ann.candidates(query, max(top_k * 8, 32)):
            row = self._row_of.get(face_id)
            if row is None or (code is not None and self._tenant_codes[row] != code):
                continue
            user = self._user_ids[row]
            score = float(self._vectors[row] @ query)
            if user not in best or score > best[user].similarity:
                best[user] = Hit(user, face_id, score)
        return sorted(best.values(), key=lambda h: -h.similarity)[:top_k]

    @property
    def lock(self) -> asyncio.Lock:
        return self._lock
