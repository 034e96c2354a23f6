"""Where the gallery snapshots (facesvc.gallery.snapshot) live: a private RAM-backed folder per
user (``facesvc-<uid>``, mode 0700, in ``FACESVC_GALLERY_SHARED_DIR``), one gallery's
snapshots named by its instance, database and model, one builder per machine under a file
lock, and the sweep of what no running facesvc can use (workers killed with -9, deleted
databases, temp files of dead processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from facesvc.db.turn import process_alive


def on_ram(directory: Path) -> bool:
    """Whether ``directory`` is on tmpfs/ramfs (a plaintext snapshot must never reach a disk)."""
    try:
        target = directory.resolve()
        best, kind = "", ""
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1].replace("\\040", " ")
            if (str(target) + "/").startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, kind = mount, parts[2]
        return kind in {"tmpfs", "ramfs"}
    except OSError:
        return False


def private_folder(directory: Path) -> Path:
    """``directory/facesvc-<uid>``, mode 0700 and owned by this user (the shared directory is
    world-writable: no other user may plant or read a snapshot)."""
    folder = directory / f"facesvc-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid():
        raise PermissionError(f"{folder} is not a folder of this user")
    if info.st_mode & 0o077:
        folder.chmod(0o700)
    return folder


class SnapshotStore:
    """Snapshots of one database's gallery (named by its random instance name and the model)
    in a RAM-backed directory, built under a file lock by the first worker that needs one."""

    def __init__(
        self, directory: Path, instance: str, model: str, database: str | None = None
    ) -> None:
        self.directory = private_folder(directory)
        safe_model = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:40]
        # ``database`` (the SQLite file's real path, or the URL without its password) is part
        # of the name: a copy of a database file keeps its gallery instance, and two copies
        # served on one machine would otherwise attach each other's snapshots
        where = f"-{hashlib.sha256(database.encode()).hexdigest()[:12]}" if database else ""
        self.prefix = f"facesvc-gallery-{instance}{where}-{safe_model}"
        self._pattern = re.compile(re.escape(self.prefix) + r"-v(\d+)(-ivf)?\.bin$")

    def path_for(self, version: int, ivf: bool = False) -> Path:
        return self.directory / f"{self.prefix}-v{version}{'-ivf' if ivf else ''}.bin"

    def versions(self) -> list[tuple[int, bool, Path]]:
        """(version, with IVF cells, path) of each snapshot, oldest first (at one version, the
        one without cells first)."""
        found = []
        for entry in self.directory.glob(f"{self.prefix}-v*.bin"):
            match = self._pattern.search(entry.name)
            if match:
                found.append((int(match.group(1)), match.group(2) is not None, entry))
        return sorted(found)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One builder per machine (blocking: call from a thread)."""
        fd = os.open(self.directory / f"{self.prefix}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove_lock_if_idle(self) -> None:
        """Delete the lock file once no snapshot is left (a builder racing this builds one
        more copy, never a wrong one: snapshots are written whole and versioned)."""
        if not self.versions():
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{self.prefix}.lock").unlink()

    def locked_if_free(self) -> contextlib.AbstractContextManager[bool]:
        """The build lock if nobody holds it (True), else False at once."""
        return _lock_if_free(self.directory / f"{self.prefix}.lock")

    def remove_unused(self, keep: Path | None = None, newest: bool = True) -> int:
        """Delete this gallery's snapshots no worker holds (other than ``keep``, and unless
        ``newest`` is false, those of the newest version: its IVF file may just have been
        written, before any worker attached it). The newest version's file without IVF cells
        goes once its file with cells exists and nobody holds it: the workers moved on.
        Under the build lock, and skipped while another worker holds it (a worker listing the
        snapshots to attach one must not see it vanish; that worker cleans up after itself)."""
        with self.locked_if_free() as free:
            return self._remove_unused(keep, newest) if free else 0

    def _remove_unused(self, keep: Path | None, newest: bool) -> int:
        removed = 0
        found = self.versions()
        top = found[-1][0] if found and newest else None
        top_has_cells = any(version == top and cells for version, cells, _ in found)
        for version, cells, path in found:
            if path == keep or (version == top and (cells or not top_has_cells)):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # attached by a worker
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
            finally:
                os.close(fd)
        return removed


_SNAPSHOT_NAME = re.compile(r"^(facesvc-gallery-.+)-v\d+(?:-ivf)?\.bin$")
_TEMP_PID = re.compile(r"(?:\.(\d+)(?:\.[0-9a-f]+)?|-reseal-(\d+)-[0-9a-f]+)\.tmp$")
TEMP_GRACE_S = 3600.0  # a temp file younger than this may be another namespace's, mid-write


def sweep_abandoned(folder: Path, keep_prefix: str | None = None) -> int:
    """Delete what no running facesvc can use from the private snapshot ``folder``: every
    snapshot of a gallery none of whose snapshots a worker holds and that nobody is building
    (workers killed with -9, a database deleted or replaced, a test's throwaway database), and
    the temp files of processes that are gone. These are plaintext vectors: they should not
    wait for a reboot. ``keep_prefix``: this worker's own gallery (its store cleans it up).

    Safe against a worker of such a gallery starting meanwhile: it takes the gallery's build
    lock before it attaches or builds anything, and the sweep holds that lock."""
    removed = 0
    galleries: dict[str, list[Path]] = {}
    now = time.time()
    for entry in folder.iterdir():
        match = _SNAPSHOT_NAME.match(entry.name)
        if match and match.group(1) != keep_prefix:
            galleries.setdefault(match.group(1), []).append(entry)
            continue
        temp = _TEMP_PID.search(entry.name)
        if temp and entry.name.startswith("facesvc-gallery-"):
            pid = int(temp.group(1) or temp.group(2))
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > TEMP_GRACE_S and not process_alive(pid):
                    entry.unlink()
                    removed += 1
    for prefix, paths in galleries.items():
        removed += _sweep_gallery(folder, prefix, paths)
    return removed


@contextlib.contextmanager
def _lock_if_free(lock_path: Path) -> Iterator[bool]:
    """A gallery's build lock if nobody holds it (True), else False at once."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _sweep_gallery(folder: Path, prefix: str, paths: list[Path]) -> int:
    lock_path = folder / f"{prefix}.lock"
    with _lock_if_free(lock_path) as free:
        if not free:
            return 0  # being built or restored: alive
        held: list[int] = []
        try:
            for path in paths:  # all of them unheld, or none is touched
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                held.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # a worker has it attached: alive
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
            return len(held)
        finally:
            for fd in held:
                os.close(fd)
