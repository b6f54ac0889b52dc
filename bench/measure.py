"""Timing loops bounded in count and in time, and the statistics the report prints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """Warm-up calls, then up to ``reps`` timed calls, stopping early after ``seconds``."""

    warmup: int
    reps: int
    seconds: float
    min_reps: int = 3


def timed(fn: Callable[[int], object], budget: Budget) -> list[float]:
    """Durations in seconds of the timed calls of ``fn(i)`` (``i`` counts all calls)."""
    for i in range(budget.warmup):
        fn(i)
    durations: list[float] = []
    stop_at = time.monotonic() + budget.seconds
    for i in range(budget.reps):
        start = time.perf_counter()
        fn(budget.warmup + i)
        durations.append(time.perf_counter() - start)
        if time.monotonic() > stop_at and len(durations) >= budget.min_reps:
            break
    return durations


def timed_prepared(prepare: Callable[[int], T], fn: Callable[[T], object], budget: Budget) -> list[float]:
    """Like :func:`timed`, but ``prepare(i)`` runs untimed before each call of ``fn``."""
    for i in range(budget.warmup):
        fn(prepare(i))
    durations: list[float] = []
    stop_at = time.monotonic() + budget.seconds
    for i in range(budget.reps):
        arg = prepare(budget.warmup + i)
        start = time.perf_counter()
        fn(arg)
        durations.append(time.perf_counter() - start)
        if time.monotonic() > stop_at and len(durations) >= budget.min_reps:
            break
    return durations


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: list[float]) -> float:
    return percentile(values, 50.0)
