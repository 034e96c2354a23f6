"""The ``embedded`` gallery's index in one worker (facesvc.gallery.lean): a snapshot (shared or
private, facesvc.gallery.snapshot) plus this worker's changes since it.

- The delta: faces added, in chunks of 1,024 rows (growth never copies what is there), and a
  tombstone per removed face (a removed delta row's tenant code matches no search; a removed
  snapshot row is marked dead and its vector zeroed in the shared file).
- Search: one tenant's rows are contiguous in the snapshot. A tenant with fewer than
  ``ann_min_size`` faces is scored exactly; a larger one through IVF (scan the ``nprobe``
  cells nearest the probe). Scores are always exact float32 inner products of the stored
  vectors (IVF only chooses which rows are scored); best face per user.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter

import numpy as np
import numpy.typing as npt

from facesvc.gallery.backend import Hit
from facesvc.gallery.index import GalleryChange
from facesvc.gallery.snapshot import (
    Snapshot,
    SnapshotData,
    empty_snapshot,
    uuid_words,
    words_uuid,
)

log = logging.getLogger(__name__)

_CHUNK = 1_024  # delta rows per chunk: growth never copies what is there
_NO_TENANT = -1  # a removed delta row's tenant code: no search matches it


class LeanIndex:
    """A snapshot (shared or private) plus this worker's changes since it."""

    def __init__(
        self,
        model_name: str,
        dim: int = 128,
        ann_min_size: int = 20_000,
        nprobe: int = 32,
        compact_after: int = 20_000,
    ) -> None:
        self.model_name = model_name
        self.dim_known = False  # until use_dimension(): a snapshot may tell it (prepare())
        # private changes before a new snapshot is wanted (and 5% of the snapshot's faces)
        self.compact_after = compact_after
        self.dim = dim
        self.ann_min_size = ann_min_size
        self.nprobe = nprobe
        self.snapshot = Snapshot(empty_snapshot(model_name, dim))
        self.version = -1  # the gallery version this index reflects; -1: not loaded
        self.stale = False  # a change arrived out of order: catch up before searching
        self.reloads = 0
        self.lock = asyncio.Lock()
        self._reset_delta()

    def _reset_delta(self) -> None:
        base = self.snapshot.data
        self._code_of: dict[uuid.UUID | None, int] = {t: i for i, t in enumerate(base.tenants)}
        self._dead: npt.NDArray[np.bool_] | None = None  # removed snapshot rows (lazily)
        self._dead_count = 0
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._delta_codes = np.zeros(0, np.int32)
        self._delta_faces: list[uuid.UUID] = []
        self._delta_users: list[uuid.UUID] = []
        self._delta_row: dict[uuid.UUID, int] = {}
        self._delta_live = 0
        self._adjust: Counter[int] = Counter()  # faces per tenant code beyond the snapshot's

    # --- state ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.snapshot.data.count - self._dead_count + self._delta_live

    @property
    def users(self) -> int:
        return self.snapshot.data.users + len(set(self._delta_users))

    @property
    def changes(self) -> int:
        """Changes held privately since the snapshot (adds and removals)."""
        return len(self._delta_faces) + self._dead_count

    @property
    def wants_new_snapshot(self) -> bool:
        return self.changes > max(self.compact_after, self.snapshot.data.count // 20)

    def use_dimension(self, dim: int) -> None:
        """The loaded embedder's size: from now on every face must have it."""
        self.dim_known = True
        if dim <= 0 or dim == self.dim:
            return
        if len(self):
            raise ValueError(f"the gallery holds {self.dim}-d faces; the embedder gives {dim}-d")
        self.dim = dim
        self.snapshot.close()
        self.snapshot = Snapshot(empty_snapshot(self.model_name, dim))
        self._reset_delta()

    def attach(self, snapshot: Snapshot) -> None:
        """Use ``snapshot`` (its version becomes this index's); the delta starts empty."""
        if not self.dim_known and snapshot.data.count:
            self.dim = snapshot.data.dim
        old, self.snapshot = self.snapshot, snapshot
        if old is not snapshot:
            old.close()
        self.version = snapshot.data.version
        self.stale = False
        self.reloads += 1
        self._reset_delta()

    def close(self) -> None:
        self.snapshot.close()

    # --- changes --------------------------------------------------------------------------
    def _code(self, tenant_id: uuid.UUID | None) -> int:
        return self._code_of.setdefault(tenant_id, len(self._code_of))

    def apply(self, version: int, change: tuple[object, ...]) -> None:
        """Apply one committed change if it is the next version; otherwise catch up first."""
        if version <= self.version:
            return  # already seen (a catch-up read it from the log)
        if version != self.version + 1:
            self.stale = True
            return
        kind, key, user_id, vector, tenant_id = GalleryChange(*change)  # type: ignore[arg-type]
        if kind == "add" and user_id is not None and vector is not None:
            self._add(key, user_id, vector, tenant_id)
        elif kind == "remove_face":
            self._remove_face(key)
        elif kind == "remove_user":
            self._remove_user(key)
        self.version = version

    def _holds(self, face_id: uuid.UUID) -> bool:
        if face_id in self._delta_row:
            return True
        row = self.snapshot.data.row_of(face_id)
        return row is not None and not (self._dead is not None and self._dead[row])

    def _add(
        self,
        face_id: uuid.UUID,
        user_id: uuid.UUID,
        vector: np.ndarray,
        tenant_id: uuid.UUID | None,
    ) -> None:
        if self._holds(face_id):  # a reload that already saw this commit: idempotent
            return
        row = len(self._delta_faces)
        if row == len(self._chunks) * _CHUNK:
            self._chunks.append(np.zeros((_CHUNK, self.dim), np.float32))
        if row == len(self._delta_codes):  # small (the delta is bounded): doubling is cheap
            codes = np.full(max(_CHUNK, 2 * row), _NO_TENANT, np.int32)
            codes[:row] = self._delta_codes
            self._delta_codes = codes
        self._chunks[row // _CHUNK][row % _CHUNK] = vector
        code = self._code(tenant_id)
        self._delta_codes[row] = code
        self._delta_faces.append(face_id)
        self._delta_users.append(user_id)
        self._delta_row[face_id] = row
        self._delta_live += 1
        self._adjust[code] += 1

    def _remove_delta_row(self, row: int) -> None:
        code = int(self._delta_codes[row])
        if code == _NO_TENANT:
            return
        self._delta_codes[row] = _NO_TENANT
        self._delta_live -= 1
        self._adjust[code] -= 1
        del self._delta_row[self._delta_faces[row]]

    def _kill_snapshot_rows(self, rows: npt.NDArray[np.intp]) -> None:
        base = self.snapshot.data
        if self._dead is None:
            self._dead = np.zeros(base.count, np.bool_)
        rows = rows[~self._dead[rows]]
        if not len(rows):
            return
        self._dead[rows] = True
        self._dead_count += len(rows)
        try:
            self.snapshot.erase_rows(rows)
        except OSError as exc:  # the row stays dead here; the next build drops it
            log.warning("an erased face's vector not zeroed in the shared snapshot: %s", exc)
        for row in rows:  # the row's tenant: the offsets range holding it
            code = int(np.searchsorted(base.offsets[:, -1], row, side="right"))
            self._adjust[code] -= 1

    def _remove_face(self, face_id: uuid.UUID) -> None:
        row = self._delta_row.get(face_id)
        if row is not None:
            self._remove_delta_row(row)
            return
        base_row = self.snapshot.data.row_of(face_id)
        if base_row is not None:
            self._kill_snapshot_rows(np.array([base_row], np.intp))

    def _remove_user(self, user_id: uuid.UUID) -> None:
        self._kill_snapshot_rows(self.snapshot.data.rows_of_user(user_id))
        for row, user in enumerate(self._delta_users):
            if user == user_id:
                self._remove_delta_row(row)

    def live(
        self,
    ) -> tuple[
        SnapshotData,
        npt.NDArray[np.bool_] | None,
        list[uuid.UUID | None],
        tuple[
            npt.NDArray[np.uint64],
            npt.NDArray[np.uint64],
            npt.NDArray[np.int32],
            npt.NDArray[np.float32],
        ],
    ]:
        """What this index holds now, for facesvc.gallery.snapshot.without_removed: the
        snapshot, its removed rows and the live delta (copies: small; cheap on the loop)."""
        count = len(self._delta_faces)
        live = np.flatnonzero(self._delta_codes[:count] != _NO_TENANT)
        vectors = (
            np.concatenate(self._chunks)[:count][live]
            if count
            else np.zeros((0, self.dim), np.float32)
        )
        faces = uuid_words([self._delta_faces[i] for i in live]) if len(live) else None
        users = uuid_words([self._delta_users[i] for i in live]) if len(live) else None
        empty = np.zeros((0, 2), np.uint64)
        tenants = sorted(self._code_of, key=self._code_of.__getitem__)
        return (
            self.snapshot.data,
            None if self._dead is None else self._dead.copy(),
            tenants,
            (
                empty if faces is None else faces,
                empty if users is None else users,
                self._delta_codes[:count][live].copy(),
                vectors,
            ),
        )

    # --- search ---------------------------------------------------------------------------
    def faces_of(self, tenant_id: uuid.UUID | None) -> int:
        code = self._code_of.get(tenant_id)
        if code is None:
            return 0
        base = self.snapshot.data
        held = (
            int(base.offsets[code, -1] - base.offsets[code, 0]) if code < len(base.tenants) else 0
        )
        return held + self._adjust[code]

    def _snapshot_candidates(
        self, base: SnapshotData, codes: list[int], query: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        rows: list[npt.NDArray[np.intp]] = []
        scores: list[npt.NDArray[np.float32]] = []
        centre_scores = None
        for code in codes:
            offsets = base.offsets[code]
            lo, hi = int(offsets[0]), int(offsets[-1])
            if hi == lo:
                continue
            if base.cells == 1 or hi - lo < self.ann_min_size:
                rows.append(np.arange(lo, hi))
                scores.append(base.vectors[lo:hi] @ query)
                continue
            if centre_scores is None:
                centre_scores = base.centroids @ query
                probe = min(self.nprobe, base.cells)
                cells = np.argpartition(-centre_scores, probe - 1)[:probe]
            for cell in cells:
                a, b = int(offsets[cell]), int(offsets[cell + 1])
                if b > a:
                    rows.append(np.arange(a, b))
                    scores.append(base.vectors[a:b] @ query)
        if not rows:
            return np.zeros(0, np.intp), np.zeros(0, np.float32)
        found_rows, found = np.concatenate(rows), np.concatenate(scores)
        if self._dead is not None and self._dead_count:
            found[self._dead[found_rows]] = -np.inf
        return found_rows, found

    def search(
        self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID | None = None
    ) -> list[Hit]:
        """The ``top_k`` users of one tenant by their best face's exact cosine similarity,
        best first. ``tenant_id`` None searches every tenant (benchmarks and tools)."""
        if tenant_id is None:
            codes = list(self._code_of.values())
        elif tenant_id in self._code_of:
            codes = [self._code_of[tenant_id]]
        else:
            return []
        query = np.asarray(query, np.float32).reshape(-1)
        base = self.snapshot.data
        rows, scores = self._snapshot_candidates(
            base, [c for c in codes if c < len(base.tenants)], query
        )
        count = len(self._delta_faces)
        if self._delta_live:
            delta_rows = np.flatnonzero(np.isin(self._delta_codes[:count], codes))
            if len(delta_rows):
                delta_scores = np.concatenate([chunk @ query for chunk in self._chunks])
                rows = np.concatenate([rows, base.count + delta_rows])
                scores = np.concatenate([scores, delta_scores[delta_rows]])
        return self._best_per_user(base, rows, scores, top_k)

    def _best_per_user(
        self,
        base: SnapshotData,
        rows: npt.NDArray[np.intp],
        scores: npt.NDArray[np.float32],
        top_k: int,
    ) -> list[Hit]:
        total = len(rows)
        if total == 0 or top_k <= 0:
            return []
        pool = min(total, max(top_k * 8, 32))
        while True:
            # equal scores (the same photo enrolled twice): the later row, the newer face, first
            if pool < total:
                picked = np.argpartition(-scores, pool - 1)[:pool]
                picked = picked[np.lexsort((-rows[picked], -scores[picked]))]
            else:
                picked = np.lexsort((-rows, -scores))
            best: dict[uuid.UUID, Hit] = {}
            for i in picked:
                score = float(scores[i])
                if not np.isfinite(score):
                    break  # sorted: only removed rows are left
                row = int(rows[i])
                if row < base.count:
                    user, face = words_uuid(base.user_ids[row]), words_uuid(base.face_ids[row])
                else:
                    user = self._delta_users[row - base.count]
                    face = self._delta_faces[row - base.count]
                if user not in best:
                    best[user] = Hit(user, face, score)
                    if len(best) == top_k:
                        break
            if len(best) == top_k or pool >= total:
                return list(best.values())
            pool = min(total, pool * 4)
