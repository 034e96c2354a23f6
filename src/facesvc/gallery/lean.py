"""The ``embedded`` gallery backend (the default): one read-only snapshot per machine that every
worker maps (facesvc.gallery.snapshot), plus a small private delta per worker (the two together:
facesvc.gallery.lean_index.LeanIndex).

- Memory: the snapshot holds each face as its vector plus fixed-size ids (about 560 bytes per
  128-d face, once per machine, in /dev/shm); a worker adds only the changes since that
  snapshot (its delta: faces added, in chunks of 1,024 rows, and a tombstone per removed face).
- Growth: an enrolment appends a row to the delta (O(1), no copy of the gallery). When the
  delta outgrows 5% of the snapshot (at least 20,000 changes), the next refresh builds a new
  snapshot (or attaches the one another worker built) and the delta starts empty.
- Workers in step: every change bumps ``gallery_state.version`` and logs what it changed
  (``gallery_changes``) in its own transaction; a worker behind replays the logged changes
  (reading the added faces' vectors from their rows) instead of reloading the gallery.
- Restarts: each snapshot built (and again with its IVF cells) is sealed to disk under the data
  key (facesvc.gallery.sealed); a start restores it in bulk and replays the log from its version.
  A removal unlinks that file at its commit; the removing worker then reseals its snapshot minus
  the removed rows, plus its delta, in the background.
- Search: one tenant's rows are contiguous in the snapshot. A tenant with fewer than
  ``ann_min_size`` faces is scored exactly; a larger one through IVF (scan the ``nprobe``
  cells nearest the probe, of about sqrt(n)). Scores are always exact float32 inner
  products of the stored vectors (IVF only chooses which rows are scored); best face per user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.gallery.backend import GallerySearch, GalleryStats
from facesvc.gallery.bulk_read import GalleryRows, read_sqlite
from facesvc.gallery.index import GalleryChange
from facesvc.gallery.lean_index import LeanIndex
from facesvc.gallery.local_copy import LocalCopyGallery
from facesvc.gallery.sealed import SealedStore
from facesvc.gallery.snapshot import (
    Snapshot,
    SnapshotData,
    attach_snapshot,
    build_snapshot,
    uuid_words,
    with_cells,
    without_removed,
)
from facesvc.gallery.snapshot_store import SnapshotStore, on_ram, sweep_abandoned
from facesvc.repositories.gallery import CHANGES_KEPT, GalleryStateRepository
from facesvc.security.crypto import DecryptionError, EmbeddingCipher, EncryptionKeyError

log = logging.getLogger(__name__)

_RESEAL_DELAY_S = 1.0  # after an erasure, before the sealed snapshot is rewritten


def rows_from_lists(
    version: int,
    face_ids: list[uuid.UUID],
    user_ids: list[uuid.UUID],
    tenant_ids: list[uuid.UUID],
    vectors: npt.NDArray[np.float32],
) -> GalleryRows:
    codes: dict[uuid.UUID, int] = {}
    tenant_of_row = np.fromiter(
        (codes.setdefault(t, len(codes)) for t in tenant_ids), np.int32, len(tenant_ids)
    )
    return GalleryRows(
        version,
        uuid_words(face_ids) if face_ids else np.zeros((0, 2), np.uint64),
        uuid_words(user_ids) if user_ids else np.zeros((0, 2), np.uint64),
        tenant_of_row,
        list(codes),
        vectors,
    )


class LeanGallery(LocalCopyGallery[LeanIndex]):
    """The ``embedded`` facesvc.gallery.backend.Gallery (see the module docstring)."""

    def __init__(
        self,
        index: LeanIndex,
        cipher: EmbeddingCipher,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        *,
        sqlite_path: str | None = None,
        shared_dir: Path | None = None,
        cache_dir: Path | None = None,
        name: str = "embedded",
        database: str | None = None,
    ) -> None:
        super().__init__(index, cipher, sessionmaker, name)
        # which database this is (SQLite: the file's real path; else the URL without its
        # password), part of the shared snapshots' names; None: the SQLite path, if any
        self._database = database or (
            os.path.realpath(sqlite_path) if sqlite_path is not None else None
        )
        self._sqlite_path = sqlite_path
        self._shared_dir = shared_dir
        self._store: SnapshotStore | None = None
        # the snapshot sealed on disk (facesvc.gallery.sealed): a restart decrypts one file
        self._cache_dir = cache_dir
        self._sealed: SealedStore | None = None
        self._seal_tasks: set[asyncio.Task[None]] = set()
        self._reseal_task: asyncio.Task[None] | None = None
        self._reseal_again = False
        # IVF cells are built after the snapshot is in use (the service is ready meanwhile,
        # searching exactly): the task, and its result where nothing is shared
        self._cells_task: asyncio.Task[None] | None = None
        self._pending: Snapshot | None = None
        if shared_dir is not None and not on_ram(shared_dir):
            log.warning(
                "FACESVC_GALLERY_SHARED_DIR=%s is not RAM-backed (tmpfs): the gallery is not "
                "shared between workers (a plaintext snapshot must not reach a disk)",
                shared_dir,
            )
            self._shared_dir = None
        if self._shared_dir is None:  # restored only into the RAM-backed shared folder
            self._cache_dir = None

    async def prepare(self) -> None:
        """Load the gallery while the models load (start() then only checks the dimension and
        catches up): at 1e6 faces the snapshot's build overlaps the model's warm-up."""
        await self.refresh()

    async def start(self, dim: int) -> GalleryStats:
        self.index.use_dimension(dim)  # refuses a loaded gallery of another size
        await self.refresh()
        shared = self.index.snapshot.path
        log.info(
            "gallery snapshot: %s (%.0f MiB)",
            shared if shared is not None else "private to this worker",
            self.index.snapshot.data.nbytes() / 2**20,
        )
        return GalleryStats(self.name, len(self.index), self.index.users)

    async def search(self, query: np.ndarray, top_k: int, tenant_id: uuid.UUID) -> GallerySearch:
        index = self.index
        if index.version < 0 or index.stale:
            await self.refresh()
        return GallerySearch(index.search(query, top_k, tenant_id), index.faces_of(tenant_id))

    def close(self) -> None:
        """Detach the snapshot and delete those no worker holds (the last worker's stop
        leaves none in RAM)."""
        if self._cells_task is not None:
            self._cells_task.cancel()  # its thread finishes its build; nothing is written after
        self.index.close()
        if self._store is not None:
            self._store.remove_unused(newest=False)  # the last worker leaves nothing behind
            self._store.remove_lock_if_idle()

    async def ensure_current(self, session: AsyncSession) -> LeanIndex:
        """Catch up with the database's gallery version: replay the logged changes, or load a
        snapshot when there is none yet, the log does not reach back far enough, or the
        private delta has grown too big. ``session`` is committed here."""
        index = self.index
        state = GalleryStateRepository(session)
        current = index.version >= 0 and not index.stale and not index.wants_new_snapshot
        if current and not self._cells_ready() and await state.version() == index.version:
            return index
        await session.commit()
        async with index.lock:
            version = await state.version()
            # the oldest snapshot worth attaching: one the change log can bring up to date
            reuse_from = version - CHANGES_KEPT // 2
            if index.version >= 0 and self._cells_ready():
                reuse_from = index.snapshot.data.version  # the same faces, with IVF cells
            elif index.version >= 0:
                if not index.wants_new_snapshot:
                    if version == index.version and not index.stale:
                        return index
                    caught_up = await self._catch_up(session, version)
                    if caught_up and not index.wants_new_snapshot:
                        await session.commit()
                        return index
                else:
                    caught_up = True
                # a gap in the log (a bump without a logged change, e.g. `facesvc reembed`):
                # only a snapshot newer than this index helps; a big delta: any newer one
                reuse_from = index.snapshot.data.version + 1 if caught_up else index.version + 1
            await session.commit()
            await self._load(session, reuse_from)
            if not await self._catch_up(session, await state.version()):
                await session.commit()
                await self._load(session, None)  # build one at the current version
                await self._catch_up(session, await state.version())
            await session.commit()
        return index

    def _cells_ready(self) -> bool:
        """Whether IVF cells were built for this worker's snapshot, which has none yet."""
        data = self.index.snapshot.data
        if data.cells > 1 or data.count < self.index.ann_min_size:
            return False
        if self._pending is not None:
            return True
        store = self._store
        return store is not None and any(
            cells and version >= data.version for version, cells, _ in store.versions()
        )

    def _build_cells_later(self, snapshot: Snapshot) -> None:
        data = snapshot.data
        if data.cells == 1 and data.count >= max(self.index.ann_min_size, 256):
            self._cells_task = asyncio.create_task(self._build_cells(data), name="gallery-ivf")

    async def _build_cells(self, data: SnapshotData) -> None:
        """Build the IVF snapshot of ``data``'s version (once per machine: under the lock,
        skipped when another worker did); workers attach it at their next refresh."""
        started = asyncio.get_running_loop().time()
        store = self._store
        if store is None:
            fresh = await asyncio.to_thread(with_cells, data, self.index.ann_min_size)
            self._pending = Snapshot(fresh)
        else:
            lock = store.locked()
            await asyncio.to_thread(lock.__enter__)
            try:
                if any(v == data.version and c for v, c, _ in store.versions()):
                    return
                fresh = await asyncio.to_thread(with_cells, data, self.index.ann_min_size)
                path = store.path_for(data.version, ivf=True)
                await asyncio.to_thread(_write, path, fresh)
            finally:
                lock.__exit__(None, None, None)
            self._seal_later(path, fresh)
        log.info(
            "gallery IVF cells: %d for %d faces, built in %.1f s after the snapshot",
            fresh.cells,
            fresh.count,
            asyncio.get_running_loop().time() - started,
        )

    async def _catch_up(self, session: AsyncSession, version: int) -> bool:
        """Replay the logged changes after this index's version; False if the log has a gap."""
        index = self.index
        state = GalleryStateRepository(session)
        while index.version < version:
            try:
                changes = await state.changes_since(index.version, self._cipher)
            except (DecryptionError, EncryptionKeyError):  # sealed under a retired key
                return False
            if not changes:
                return False  # a version with nothing logged (facesvc reembed): a gap
            # this worker's own commits may have been applied meanwhile (after-commit hooks
            # run while the log is read): skip what the index already has
            changes = [change for change in changes if change[0] > index.version]
            if changes and changes[0][0] != index.version + 1:
                return False
            added = [key for _, kind, key in changes if kind == "add"]
            vectors = {
                face_id: (user_id, tenant_id, vector)
                for face_id, user_id, tenant_id, vector in await self.faces(
                    session
                ).embeddings_by_id(added, index.model_name)
            }
            for number, kind, key in changes:
                if number <= index.version:
                    continue
                if number != index.version + 1:
                    return False
                if kind == "add":
                    if key in vectors:
                        user_id, tenant_id, vector = vectors[key]
                        index.apply(number, ("add", key, user_id, vector, tenant_id))
                    else:  # deleted since, or another model's face: nothing to add
                        index.version = number
                else:
                    index.apply(number, (kind, key))
                    self._erase_sealed(before=number)
        index.stale = False
        return True

    async def _load(self, session: AsyncSession, reuse_from: int | None) -> None:
        """Attach the newest snapshot of this gallery if its version is ``reuse_from`` or later
        (another worker's; None: never), else build one: under the machine's lock, off the
        event loop."""
        state = GalleryStateRepository(session)
        instance = await state.instance()
        current = await state.version()
        await session.commit()
        if self._store is None and self._shared_dir is not None and instance is not None:
            try:
                self._store = SnapshotStore(
                    self._shared_dir, instance, self.index.model_name, self._database
                )
            except PermissionError as exc:  # e.g. another user made facesvc-<uid> first
                log.warning(
                    "gallery snapshots not shared (%s): each worker keeps its own copy", exc
                )
                self._shared_dir = self._cache_dir = None
            else:
                await asyncio.to_thread(self._sweep, self._store)
        store = self._store
        if store is None:
            pending, self._pending = self._pending, None
            if (
                pending is not None
                and reuse_from is not None
                and reuse_from <= pending.data.version <= current
            ):
                self.index.attach(pending)
                return
            rows = await self._read_rows(session)
            snapshot = Snapshot(await asyncio.to_thread(self._build, rows))
            self.index.attach(snapshot)
            self._build_cells_later(snapshot)
            return
        lock = store.locked()
        await asyncio.to_thread(lock.__enter__)
        try:
            usable = [
                (version, cells, path)
                for version, cells, path in store.versions()
                if reuse_from is not None and reuse_from <= version <= current
            ]
            built = False
            restored = None
            sealed = self._sealed_store(instance)
            if not usable and sealed is not None and reuse_from is not None:
                restored = await self._restore(sealed, store, reuse_from, current)
            if usable:  # the newest; at one version, the one with cells
                snapshot = await asyncio.to_thread(attach_snapshot, usable[-1][2])
            elif restored is not None:
                snapshot = await asyncio.to_thread(attach_snapshot, restored)
                built = True  # its cells follow if it had none
            else:
                clock = asyncio.get_running_loop().time
                began = clock()
                rows = await self._read_rows(session)
                read = clock()
                data = await asyncio.to_thread(self._build, rows)
                del rows
                ordered = clock()
                path = store.path_for(data.version)
                if not path.exists():
                    await asyncio.to_thread(_write, path, data)
                snapshot = await asyncio.to_thread(attach_snapshot, path)
                built = True
                self._seal_later(path, data)
                log.info(
                    "gallery snapshot v%d of %d faces built: read and decrypted in %.1f s, "
                    "ordered in %.1f s, written in %.1f s",
                    data.version,
                    data.count,
                    read - began,
                    ordered - read,
                    clock() - ordered,
                )
                del data
            self.index.attach(snapshot)
        finally:
            lock.__exit__(None, None, None)
        await asyncio.to_thread(store.remove_unused, snapshot.path)
        if built:
            self._build_cells_later(snapshot)

    @staticmethod
    def _sweep(store: SnapshotStore) -> None:
        """Once per worker: delete other galleries' snapshots nobody uses (kill -9, a deleted
        database) and dead processes' temp files; never fails a start."""
        try:
            removed = sweep_abandoned(store.directory, store.prefix)
        except OSError as exc:
            log.warning("gallery snapshot folder %s not swept: %s", store.directory, exc)
            return
        if removed:
            log.info(
                "gallery: %d abandoned snapshot file(s) removed from %s", removed, store.directory
            )

    def _sealed_store(self, instance: str | None) -> SealedStore | None:
        """The sealed copy on disk (None: no folder, no shared snapshot, or dev mode)."""
        if self._sealed is None and self._cache_dir is not None and instance is not None:
            if self._cipher.active_key_id is None:
                log.info(
                    "no data key (dev mode): the gallery snapshot is not kept on disk "
                    "(it would be plaintext); every start reads the faces table"
                )
                self._cache_dir = None
                return None
            self._sealed = SealedStore(
                self._cache_dir,
                instance,
                self.index.model_name,
                self._cipher,
                self._sqlite_path,
            )
        return self._sealed

    async def _restore(
        self, sealed: SealedStore, store: SnapshotStore, reuse_from: int, current: int
    ) -> Path | None:
        """Decrypt the sealed snapshot into the shared folder (its path), if usable."""
        header = await asyncio.to_thread(sealed.header)
        if header is None:
            return None
        began = asyncio.get_running_loop().time()
        # the name of the snapshot it was sealed from
        target = store.path_for(header.version, ivf=header.cells > 1)
        version = await asyncio.to_thread(
            sealed.restore,
            target,
            self.index.dim if self.index.dim_known else None,
            current,
            reuse_from,
        )
        if version is None:
            return None
        log.info(
            "gallery snapshot v%d restored from %s in %.1f s",
            version,
            sealed.path,
            asyncio.get_running_loop().time() - began,
        )
        return target

    def _seal_later(self, path: Path, data: SnapshotData) -> None:
        """Seal the snapshot at ``path`` to disk in the background (the service is ready)."""
        sealed = self._sealed
        if sealed is None:
            return
        version, dim, cells = data.version, data.dim, data.cells

        async def seal() -> None:
            began = asyncio.get_running_loop().time()
            try:
                done = await asyncio.to_thread(sealed.write, path, version, dim, cells)
            except OSError as exc:  # e.g. the snapshot was replaced meanwhile: next time
                log.warning("gallery snapshot v%d not sealed to disk: %s", version, exc)
                return
            if done:
                log.info(
                    "gallery snapshot v%d sealed to %s in %.1f s",
                    version,
                    sealed.path,
                    asyncio.get_running_loop().time() - began,
                )

        task = asyncio.create_task(seal(), name="gallery-seal")
        self._seal_tasks.add(task)
        task.add_done_callback(self._seal_tasks.discard)

    async def _read_rows(self, session: AsyncSession) -> GalleryRows:
        index = self.index
        if self._sqlite_path is not None:
            dim = index.dim if index.dim_known else None
            return await asyncio.to_thread(
                read_sqlite, self._sqlite_path, index.model_name, dim, self._cipher
            )
        # another database: the ORM's read (row by row); the snapshot still saves the copies
        version = await GalleryStateRepository(session).version()
        face_ids, user_ids, tenant_ids, matrix = await self.faces(session).all_embeddings(
            index.model_name
        )
        await session.commit()
        if len(face_ids) and matrix.shape[1] != index.dim and index.dim_known:
            raise ValueError(
                f"the gallery holds {matrix.shape[1]}-d faces; the embedder gives {index.dim}-d"
            )
        return rows_from_lists(version, face_ids, user_ids, tenant_ids, matrix)

    def _build(self, rows: GalleryRows) -> SnapshotData:
        """The snapshot without IVF cells (k-means and the assignment of every face, 2/3 of a
        build at 1e6 faces, follow in the background: _build_cells_later)."""
        index = self.index
        dim = rows.vectors.shape[1] if len(rows.vectors) else index.dim
        return build_snapshot(
            rows.version,
            index.model_name,
            dim,
            rows.face_ids,
            rows.user_ids,
            rows.tenant_of_row,
            rows.tenants,
            rows.vectors,
            ivf_min_size=2**62,
        )

    def _applied(self, version: int, change: GalleryChange) -> None:
        self.index.apply(version, change)
        if change.kind != "add":
            self._erase_sealed(before=version)
            self._reseal_later()

    def _reseal_later(self) -> None:
        """After an erasure (the file is gone): seal this worker's snapshot minus its removed
        rows, plus its delta, in the background, so the next restart is warm again; a burst of
        erasures makes one rewrite (and one more for those during it)."""
        if self._sealed is None or self._store is None:
            return
        if self._reseal_task is not None and not self._reseal_task.done():
            self._reseal_again = True
            return
        self._reseal_task = asyncio.create_task(self._reseal(), name="gallery-reseal")

    async def _reseal(self) -> None:
        sealed, store = self._sealed, self._store
        if sealed is None or store is None:
            return
        self._reseal_again = True
        while self._reseal_again:
            self._reseal_again = False
            await asyncio.sleep(_RESEAL_DELAY_S)  # lets a burst of erasures gather
            index = self.index
            if index.stale or index.version < 0:
                return  # behind: the next snapshot build seals
            version = index.version
            data, dead, tenants, added = index.live()
            if any(t is None for t in tenants):
                return  # a change without a tenant (tools): nothing to seal it under
            began = asyncio.get_running_loop().time()

            try:
                done = await asyncio.to_thread(
                    _seal_live,
                    sealed,
                    store.directory
                    / f"{store.prefix}-reseal-{os.getpid()}-{secrets.token_hex(4)}.tmp",
                    without_removed,
                    (data, dead, version, [t for t in tenants if t is not None], added),
                )
            except OSError as exc:
                log.warning("gallery snapshot v%d not resealed: %s", version, exc)
                return
            del data, dead, added
            if done:
                log.info(
                    "gallery snapshot v%d resealed after an erasure in %.1f s",
                    version,
                    asyncio.get_running_loop().time() - began,
                )

    def _erase_sealed(self, before: int | None = None) -> None:
        """A removal: the sealed file may hold the vector; delete it (and the cache folder's
        file of this gallery even before this worker opened it). ``before``: the removal's
        version (a file sealed at it or later stays). Runs in after-commit hooks: a folder
        that cannot be written is logged, never raised (the deletion did commit)."""
        if self._sealed is not None:
            try:
                self._sealed.erase(before)
            except OSError as exc:
                log.error("could not remove the sealed gallery snapshot after an erasure: %s", exc)


def _seal_live(
    sealed: SealedStore,
    tmp: Path,
    compact: Callable[..., SnapshotData],
    args: tuple[object, ...],
) -> bool:
    """Build the snapshot ``compact(*args)``, write it to ``tmp`` (RAM) and seal it."""
    fresh = compact(*args)
    try:
        _write(tmp, fresh)
        return sealed.write(tmp, fresh.version, fresh.dim, fresh.cells)
    finally:
        tmp.unlink(missing_ok=True)


def _write(path: Path, data: SnapshotData) -> None:
    from facesvc.gallery.snapshot import write_snapshot

    write_snapshot(path, data)
