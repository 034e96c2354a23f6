"""Sweeping the private snapshot folder (facesvc.gallery.snapshot_store.sweep_abandoned): what a
killed server or a deleted database left goes; what a running worker holds, what is being
built, this worker's own gallery and a live process's temp file stay."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np

from facesvc.gallery.snapshot import attach_snapshot, build_snapshot, uuid_words, write_snapshot
from facesvc.gallery.snapshot_store import TEMP_GRACE_S, SnapshotStore, sweep_abandoned

TENANT = uuid.uuid4()


def snapshot_files(directory: Path, instance: str, versions: list[int]) -> SnapshotStore:
    store = SnapshotStore(directory, instance, "m")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4, 8)).astype(np.float32)
    ids = uuid_words([uuid.uuid4() for _ in range(4)])
    for version in versions:
        data = build_snapshot(
            version, "m", 8, ids, ids, np.zeros(4, np.int32), [TENANT], vectors, 10**9
        )
        write_snapshot(store.path_for(version), data)
    with store.locked():  # leaves the lock file, as a real store does
        pass
    return store


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_an_abandoned_gallery_goes_with_its_lock(tmp_path: Path) -> None:
    store = snapshot_files(tmp_path, "dead", [3, 4])
    assert sweep_abandoned(store.directory) == 2
    assert names(store.directory) == set()


def test_a_gallery_a_worker_holds_stays_whole(tmp_path: Path) -> None:
    store = snapshot_files(tmp_path, "live", [3, 4])
    attached = attach_snapshot(store.path_for(4))
    try:
        assert sweep_abandoned(store.directory) == 0
        assert len(store.versions()) == 2  # v3 too: the store's own clean-up decides it
    finally:
        attached.close()


def test_a_gallery_being_built_stays(tmp_path: Path) -> None:
    store = snapshot_files(tmp_path, "building", [1])
    with store.locked():
        assert sweep_abandoned(store.directory) == 0
    assert len(store.versions()) == 1


def test_this_workers_gallery_is_left_to_its_store(tmp_path: Path) -> None:
    mine = snapshot_files(tmp_path, "mine", [1])
    other = snapshot_files(tmp_path, "other", [1])
    assert sweep_abandoned(mine.directory, mine.prefix) == 1
    assert len(mine.versions()) == 1
    assert other.versions() == []


def test_a_held_file_in_another_process_counts(tmp_path: Path) -> None:
    """The flock of a worker in another process (here a child holding LOCK_SH)."""
    store = snapshot_files(tmp_path, "child", [2])
    path = store.path_for(2)
    child = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_SH)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        assert sweep_abandoned(store.directory) == 0
        child.kill()
        child.wait()
        assert sweep_abandoned(store.directory) == 1  # killed: the kernel let go of its lock
    finally:
        child.kill()
        child.wait()


def test_temp_files_of_dead_processes_go_after_the_grace(tmp_path: Path) -> None:
    store = snapshot_files(tmp_path, "tmp", [])
    folder = store.directory
    dead = subprocess.Popen(["true"])
    dead.wait()
    old = time.time() - TEMP_GRACE_S - 60
    files = {
        "dead-old": folder / f"{store.prefix}-v1.bin.{dead.pid}.tmp",
        "dead-old-sealed": folder / f"{store.prefix}.sealed.{dead.pid}.ab12cd34.tmp",
        "dead-old-reseal": folder / f"{store.prefix}-reseal-{dead.pid}-ab12cd34.tmp",
        "dead-young": folder / f"{store.prefix}-v2.bin.{dead.pid}.tmp",
        "alive-old": folder / f"{store.prefix}-v3.bin.{os.getpid()}.tmp",
        "not-ours": folder / f"other-{dead.pid}.tmp",
    }
    for key, path in files.items():
        path.write_bytes(b"x")
        if key != "dead-young":
            os.utime(path, (old, old))
    assert sweep_abandoned(folder) == 3
    left = {key for key, path in files.items() if path.exists()}
    assert left == {"dead-young", "alive-old", "not-ours"}


def test_a_lock_file_alone_is_untouched_while_held(tmp_path: Path) -> None:
    """A gallery whose only trace is its lock, held by a builder: nothing to sweep."""
    store = snapshot_files(tmp_path, "lockonly", [])
    fd = os.open(store.directory / f"{store.prefix}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sweep_abandoned(store.directory) == 0
        assert (store.directory / f"{store.prefix}.lock").exists()
    finally:
        os.close(fd)


def test_copies_of_one_database_never_share_snapshots(tmp_path: Path) -> None:
    """A copied database file keeps its gallery instance; its snapshots are named by where it
    lives too, so two copies served on one machine never attach each other's."""
    a = SnapshotStore(tmp_path, "same-instance", "m", str(tmp_path / "a.db"))
    b = SnapshotStore(tmp_path, "same-instance", "m", str(tmp_path / "copy" / "a.db"))
    again = SnapshotStore(tmp_path, "same-instance", "m", str(tmp_path / "a.db"))
    assert a.prefix != b.prefix
    assert a.prefix == again.prefix
    assert a.path_for(3) != b.path_for(3)
