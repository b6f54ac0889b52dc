"""Memory of a server and its children, sampled from /proc while a workload runs.

The measure is the proportional set size (PSS, ``/proc/PID/smaps_rollup``) summed over the
process tree: each page counts once in all, split among the processes that share it. That is
the physical memory the tree uses. Summed VmRSS counts a page once per process that maps it:
for forked workers (``serve --workers N``), which share their parent's imported code and data,
it overstates the use by that shared part; it is sampled as well and reported beside PSS. For a
single process the two differ only by the share of libraries other programs map too.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PROC = Path("/proc")
SAMPLE_INTERVAL_S = 0.02
TREE_REFRESH_S = 1.0


def _proc_kb(pid: int, name: str, key: str) -> int:
    """The kB value of line ``key:`` of ``/proc/PID/name`` (0 when the process has gone)."""
    try:
        for line in (PROC / str(pid) / name).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def tree_rss_bytes(pids: list[int]) -> int:
    return sum(_proc_kb(p, "status", "VmRSS") for p in pids) * 1024


def tree_pss_bytes(pids: list[int]) -> int:
    return sum(_proc_kb(p, "smaps_rollup", "Pss") for p in pids) * 1024


def tree_hwm_bytes(pid: int) -> int:
    """Sum of VmHWM (lifetime peak RSS) over the tree; an upper bound of the simultaneous peak."""
    return sum(_proc_kb(p, "status", "VmHWM") for p in process_tree(pid)) * 1024


class MemorySampler:
    """Samples the summed PSS and VmRSS of a process tree every 20 ms in a background thread."""

    def __init__(self, pid: int, max_seconds: float) -> None:
        self.pid = pid
        self.max_seconds = max_seconds
        tree = process_tree(pid)
        self.baseline = tree_pss_bytes(tree)
        self.peak = self.baseline
        self.baseline_rss = tree_rss_bytes(tree)
        self.peak_rss = self.baseline_rss
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        end = time.monotonic() + self.max_seconds
        tree, refreshed = process_tree(self.pid), time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            if time.monotonic() - refreshed > TREE_REFRESH_S:
                tree, refreshed = process_tree(self.pid), time.monotonic()
            self.peak = max(self.peak, tree_pss_bytes(tree))
            self.peak_rss = max(self.peak_rss, tree_rss_bytes(tree))
            self.samples += 1
            self._stop.wait(SAMPLE_INTERVAL_S)
