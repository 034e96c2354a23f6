"""A read-only gallery snapshot that the workers of one machine share (the ``embedded`` backend).

Every face of one model as fixed-size arrays, never Python objects per face:

- ``vectors``: float32 ``(n, dim)``, the exact vectors every score is computed from;
- ``face_ids``, ``user_ids``: uint64 ``(n, 2)``, the 16 bytes of each uuid;
- ``face_hi_sorted`` / ``face_order``: the faces' first 8 bytes sorted and the rows in that
  order, so face -> row is a binary search (no dict of a million uuids);
- rows are ordered by (tenant, IVF cell): ``offsets[t, c]`` is the first row of tenant ``t`` in
  cell ``c``, so one tenant's faces, and its faces in one cell, are contiguous slices
  (a search never even reads another tenant's rows);
- ``centroids``: the IVF cells (spherical k-means, about sqrt(n) of them; one cell, no
  IVF, below ``ivf_min_size`` faces).

About 560 bytes per 128-d face. The first worker of a machine that needs gallery version V
builds the file under a file lock (one bulk read of the faces table, decrypted once, in a
thread), writes it to a RAM-backed directory (``/dev/shm``) and every worker maps it
read-only: one copy per machine, not one per worker. The vectors in it are plaintext, so
the directory must be RAM (tmpfs), never a disk: the database keeps them encrypted at rest,
and an unused snapshot is removed when a worker stops (or by the next start after a crash).
Each attached worker holds a shared ``flock`` on its file; a file that nobody holds is stale.
The folder, the build lock and that clean-up: facesvc.gallery.snapshot_store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import mmap
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

MAGIC = b"FSVCGAL1"
_ALIGN = 64
_ARRAYS = (
    "vectors",
    "face_ids",
    "user_ids",
    "face_hi_sorted",
    "face_order",
    "centroids",
    "offsets",
)
_CHUNK = 65_536  # rows per step of a cell assignment


def uuid_words(ids: list[uuid.UUID] | list[bytes]) -> npt.NDArray[np.uint64]:
    """``(n, 2)`` uint64 holding each uuid's 16 bytes."""
    raw = b"".join(i.bytes if isinstance(i, uuid.UUID) else i for i in ids)
    return np.frombuffer(raw, np.uint64).reshape(-1, 2).copy()


def distinct(values: npt.NDArray[np.uint64]) -> int:
    """How many distinct values: by sorting (numpy 2's hashing np.unique took 0.69 s for 1e6
    user ids here, a sort 0.05 s)."""
    if not len(values):
        return 0
    ordered = np.sort(values)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


def words_uuid(words: npt.NDArray[np.uint64]) -> uuid.UUID:
    return uuid.UUID(bytes=np.ascontiguousarray(words, np.uint64).tobytes())


def cells_for(count: int) -> int:
    """IVF cells for ``count`` faces: about 2 sqrt(count). Smaller cells scan fewer rows for the
    same recall. At 1e6 random 128-d faces, 1,000 noisy copies of stored vectors (AMD EPYC, one
    core): 1,000 cells, nprobe 96: recall@1 0.996 in 4.5 ms (96,000 rows); 2,000 cells, nprobe
    128: 0.995 in 3.2 ms (64,000 rows); 4,000 cells, nprobe 128: 0.993 in 2.1 ms, but k-means
    took 30 s instead of 11 s (in the background, after ready). Scanning is bound by the rows
    read: one matrix-vector product per cell."""
    return int(min(8_192, max(16, round(2 * math.sqrt(count)))))


def spherical_kmeans(
    vectors: npt.NDArray[np.float32], cells: int, iterations: int = 10
) -> npt.NDArray[np.float32]:
    """``cells`` unit centroids trained on a fixed-seed sample of up to 64 faces per cell (at
    1e6 faces: 32 faces and 6 rounds gave recall@1 0.99 at nprobe 64, these 0.995, 1.2 s more)."""
    rng = np.random.default_rng(0)
    sample = vectors
    if len(vectors) > 64 * cells:
        sample = vectors[np.sort(rng.choice(len(vectors), 64 * cells, replace=False))]
    centroids = sample[rng.choice(len(sample), cells, replace=False)].copy()
    for _ in range(iterations):
        assign = assign_cells(sample, centroids)
        order = np.argsort(assign, kind="stable")
        present, starts = np.unique(assign[order], return_index=True)
        sums = np.zeros_like(centroids)
        sums[present] = np.add.reduceat(sample[order], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms == 0
        if empty.any():  # an empty cell restarts at a random face
            sums[empty] = sample[rng.choice(len(sample), int(empty.sum()), replace=False)]
            norms[empty] = np.linalg.norm(sums[empty], axis=1)
        centroids = (sums / norms[:, None]).astype(np.float32)
    return centroids


def assign_cells(
    vectors: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32]
) -> npt.NDArray[np.int32]:
    """Each vector's nearest centroid (exact: a two-step assignment through groups of
    centroids was 1.7x faster at 1e6 but cost 0.04 of recall@1 at nprobe 64)."""
    out = np.empty(len(vectors), np.int32)
    for start in range(0, len(vectors), _CHUNK):
        out[start : start + _CHUNK] = np.argmax(vectors[start : start + _CHUNK] @ centroids.T, 1)
    return out


@dataclass
class SnapshotData:
    """A gallery version's faces, ordered by (tenant, cell); see the module docstring."""

    version: int
    model: str
    dim: int
    users: int
    tenants: list[uuid.UUID]
    vectors: npt.NDArray[np.float32]
    face_ids: npt.NDArray[np.uint64]
    user_ids: npt.NDArray[np.uint64]
    face_hi_sorted: npt.NDArray[np.uint64]
    face_order: npt.NDArray[np.int32]
    centroids: npt.NDArray[np.float32]
    offsets: npt.NDArray[np.int64]

    @property
    def count(self) -> int:
        return len(self.vectors)

    @property
    def cells(self) -> int:
        return len(self.centroids)

    def row_of(self, face_id: uuid.UUID) -> int | None:
        """The row holding ``face_id``, by binary search on its first 8 bytes."""
        hi, lo = np.frombuffer(face_id.bytes, np.uint64)
        i = int(np.searchsorted(self.face_hi_sorted, hi))
        while i < len(self.face_hi_sorted) and self.face_hi_sorted[i] == hi:
            row = int(self.face_order[i])
            if self.face_ids[row, 1] == lo:
                return row
            i += 1
        return None

    def rows_of_user(self, user_id: uuid.UUID) -> npt.NDArray[np.intp]:
        hi, lo = np.frombuffer(user_id.bytes, np.uint64)
        return np.flatnonzero((self.user_ids[:, 0] == hi) & (self.user_ids[:, 1] == lo))

    def nbytes(self) -> int:
        return sum(int(getattr(self, name).nbytes) for name in _ARRAYS)


def build_snapshot(
    version: int,
    model: str,
    dim: int,
    face_ids: npt.NDArray[np.uint64],
    user_ids: npt.NDArray[np.uint64],
    tenant_of_row: npt.NDArray[np.int32],
    tenants: list[uuid.UUID],
    vectors: npt.NDArray[np.float32],
    ivf_min_size: int,
    assigned: tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]] | None = None,
) -> SnapshotData:
    """Order the rows by (tenant, cell), train the cells and index the face ids. ``assigned``:
    cells known already (centroids, each row's cell): no training."""
    n = len(vectors)
    vectors = np.ascontiguousarray(vectors, np.float32).reshape(n, dim)
    if assigned is not None:
        centroids, cell = assigned
    elif n >= max(ivf_min_size, 256):
        centroids = spherical_kmeans(vectors, cells_for(n))
        cell = assign_cells(vectors, centroids)
    else:
        centroids = np.zeros((1, dim), np.float32)
        cell = np.zeros(n, np.int32)
    cells = len(centroids)
    if cells > 1 or len(tenants) > 1:  # one tenant and no cells: the rows are in order already
        order = np.lexsort((cell, tenant_of_row))
        vectors, face_ids, user_ids = vectors[order], face_ids[order], user_ids[order]
        tenant_of_row, cell = tenant_of_row[order], cell[order]
    counts = np.bincount(
        tenant_of_row.astype(np.int64) * cells + cell, minlength=len(tenants) * cells
    )
    flat = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    starts = np.arange(len(tenants))[:, None] * cells + np.arange(cells + 1)[None, :]
    offsets = flat[starts] if len(tenants) else np.zeros((0, cells + 1), np.int64)
    face_order = np.argsort(face_ids[:, 0], kind="stable").astype(np.int32)
    return SnapshotData(
        version=version,
        model=model,
        dim=dim,
        users=distinct(user_ids[:, 0]),
        tenants=list(tenants),
        vectors=vectors,
        face_ids=face_ids,
        user_ids=user_ids,
        face_hi_sorted=np.ascontiguousarray(face_ids[face_order, 0]),
        face_order=face_order,
        centroids=centroids,
        offsets=np.ascontiguousarray(offsets, np.int64),
    )


def with_cells(data: SnapshotData, ivf_min_size: int) -> SnapshotData:
    """``data`` (one cell, rows by tenant) rebuilt with IVF cells: the slow half of a build,
    run after the service is ready (blocking: run it in a thread)."""
    sizes = data.offsets[:, -1] - data.offsets[:, 0]
    tenant_of_row = np.repeat(np.arange(len(data.tenants), dtype=np.int32), sizes)
    return build_snapshot(
        data.version,
        data.model,
        data.dim,
        np.array(data.face_ids),
        np.array(data.user_ids),
        tenant_of_row,
        data.tenants,
        np.array(data.vectors),
        ivf_min_size,
    )


def without_removed(
    data: SnapshotData,
    dead: npt.NDArray[np.bool_] | None,
    version: int,
    tenants: list[uuid.UUID],
    added: tuple[
        npt.NDArray[np.uint64],
        npt.NDArray[np.uint64],
        npt.NDArray[np.int32],
        npt.NDArray[np.float32],
    ],
) -> SnapshotData:
    """``data`` minus its ``dead`` rows plus ``added`` (face ids, user ids, tenant codes into
    ``tenants``, whose first entries are ``data``'s, and vectors) at ``version``: the cells stay,
    the added rows go to their nearest (no training). Blocking: run it in a thread."""
    sizes = np.diff(data.offsets, axis=1).ravel()
    cells = data.cells
    tenant_of_row = np.repeat(
        np.arange(len(data.tenants), dtype=np.int32), sizes.reshape(-1, cells).sum(1)
    )
    cell = np.repeat(np.tile(np.arange(cells, dtype=np.int32), len(data.tenants)), sizes)
    keep = ~dead if dead is not None else np.ones(data.count, np.bool_)
    faces, users, codes, vectors = added
    new_cells = (
        assign_cells(vectors, np.asarray(data.centroids))
        if cells > 1
        else np.zeros(len(vectors), np.int32)
    )
    return build_snapshot(
        version,
        data.model,
        data.dim,
        np.concatenate([data.face_ids[keep], faces]),
        np.concatenate([data.user_ids[keep], users]),
        np.concatenate([tenant_of_row[keep], codes]),
        tenants,
        np.concatenate([data.vectors[keep], vectors]),
        ivf_min_size=2**62,
        assigned=(np.array(data.centroids), np.concatenate([cell[keep], new_cells])),
    )


class Snapshot:
    """A snapshot in use by this worker: mapped from a shared file, or private arrays."""

    def __init__(
        self,
        data: SnapshotData,
        path: Path | None = None,
        handle: Any = None,
        fd: int = -1,
        vectors_at: int = -1,
    ) -> None:
        self.data = data
        self.path = path
        self._map = handle
        self._fd = fd  # holds a shared flock while attached: the file is in use
        self._vectors_at = vectors_at  # where the vectors start in the file

    def erase_rows(self, rows: npt.NDArray[np.intp]) -> None:
        """Overwrite these rows' vectors with zeros in the shared file (an erased face's
        plaintext leaves /dev/shm now, not at the next snapshot build, and a tmpfs file
        outlives the processes that wrote it); every worker's mapping sees it at once (a
        zero vector matches nothing; the row is dead in this worker's delta already). A
        private snapshot is this process's memory, gone with it, and may share its arrays
        with the caller's: left as it is."""
        if not len(rows) or self.path is None:
            return
        width = self.data.dim * self.data.vectors.dtype.itemsize
        zeros = bytes(width)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for row in rows:
                os.pwrite(fd, zeros, self._vectors_at + int(row) * width)
        finally:
            os.close(fd)

    @property
    def shared(self) -> bool:
        return self.path is not None

    def close(self) -> None:
        self.data = empty_snapshot(self.data.model, self.data.dim)
        if self._map is not None:
            with contextlib.suppress(BufferError):  # arrays still referenced: the GC unmaps
                self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)  # drops the shared lock
            self._fd = -1


def empty_snapshot(model: str, dim: int) -> SnapshotData:
    """A snapshot of no faces."""
    return build_snapshot(
        0,
        model,
        dim,
        np.zeros((0, 2), np.uint64),
        np.zeros((0, 2), np.uint64),
        np.zeros(0, np.int32),
        [],
        np.zeros((0, dim), np.float32),
        1,
    )


def write_snapshot(path: Path, data: SnapshotData) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically: a reader sees all of it or none."""
    arrays: dict[str, list[Any]] = {}
    offset = 0
    for name in _ARRAYS:
        array = np.ascontiguousarray(getattr(data, name))
        arrays[name] = [offset, array.dtype.str, list(array.shape)]
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = json.dumps(
        {
            "version": data.version,
            "model": data.model,
            "dim": data.dim,
            "users": data.users,
            "tenants": [t.hex for t in data.tenants],
            "arrays": arrays,
        }
    ).encode()
    head = MAGIC + len(header).to_bytes(8, "little") + header
    base = -(-len(head) // _ALIGN) * _ALIGN
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head.ljust(base, b"\0"))
            for name in _ARRAYS:
                array = np.ascontiguousarray(getattr(data, name))
                out.seek(base + arrays[name][0])
                out.write(array.data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def attach_snapshot(path: Path) -> Snapshot:
    """Map ``path`` read-only (a shared flock marks it in use until :meth:`Snapshot.close`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        handle = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        if handle[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{path} is not a gallery snapshot")
        size = int.from_bytes(handle[8:16], "little")
        meta = json.loads(handle[16 : 16 + size])
        base = -(-(16 + size) // _ALIGN) * _ALIGN
        fields: dict[str, Any] = {}
        vectors_at = base + int(meta["arrays"]["vectors"][0])
        for name in _ARRAYS:
            start, dtype, shape = meta["arrays"][name]
            count = int(np.prod(shape)) if shape else 1
            fields[name] = np.frombuffer(
                handle, np.dtype(dtype), count=count, offset=base + start
            ).reshape(shape)
        data = SnapshotData(
            version=int(meta["version"]),
            model=str(meta["model"]),
            dim=int(meta["dim"]),
            users=int(meta["users"]),
            tenants=[uuid.UUID(hex=t) for t in meta["tenants"]],
            **fields,
        )
    except BaseException:
        os.close(fd)
        raise
    return Snapshot(data, path, handle, fd, vectors_at)
