"""CPU time and memory of a process and its descendants, read from /proc (Linux only).

Standard library only, for the e2e tests and the bench scripts: a server started with
``serve --workers N`` is a tree of processes, and its cost is the whole tree's.
"""

from __future__ import annotations

import os
from pathlib import Path


def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM`` = peak RSS, ``VmRSS``), Linux only."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key == field:
            return int(value.split()[0])
    return None


def _proc_stats() -> dict[int, list[str]]:
    """The fields after ``pid (comm)`` of every process's /proc/<pid>/stat (Linux)."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
        except OSError:
            continue
        found[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()
    return found


def process_tree(pid: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """``pid`` and every live descendant (the workers of ``serve --workers N``)."""
    stats = stats if stats is not None else _proc_stats()
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, fields in stats.items() if int(fields[1]) == parent]
        tree.extend(children)
        frontier.extend(children)
    return tree


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every live descendant, from
    /proc/<pid>/stat; Linux only. Descendants that exited are not counted: read it while
    the server runs."""
    stats = _proc_stats()
    ticks = os.sysconf("SC_CLK_TCK")
    used = sum(
        int(stats[p][11]) + int(stats[p][12]) for p in process_tree(pid, stats) if p in stats
    )
    return used / ticks


def process_tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (each worker's models count)."""
    return sum(proc_status_kib(p, "VmRSS") or 0 for p in process_tree(pid))
