"""Resident memory of a server and its children, sampled from /proc while a workload runs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PROC = Path("/proc")
SAMPLE_INTERVAL_S = 0.02
TREE_REFRESH_S = 1.0


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
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
    return sum(_status_kb(p, "VmRSS") for p in pids) * 1024


def tree_hwm_bytes(pid: int) -> int:
    """Sum of VmHWM (lifetime peak RSS) over the tree; an upper bound of the simultaneous peak."""
    return sum(_status_kb(p, "VmHWM") for p in process_tree(pid)) * 1024


class RssSampler:
    """Samples the summed VmRSS of a process tree every 20 ms in a background thread."""

    def __init__(self, pid: int, max_seconds: float) -> None:
        self.pid = pid
        self.max_seconds = max_seconds
        self.baseline = tree_rss_bytes(process_tree(pid))
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
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
            self.peak = max(self.peak, tree_rss_bytes(tree))
            self.samples += 1
            self._stop.wait(SAMPLE_INTERVAL_S)
