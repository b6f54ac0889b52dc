"""Import many candidates at once: each instance is made durable on its own (fsync of the blob, of
its folder, and the index commit), so a few at a time overlap those waits. Measured here: 300
small instances in 6.0 s one at a time, 1.1 s four at a time.

With a reconciliation source the candidates go one at a time: a study's first instance opens its
case and the next ones must see that decision.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imagebridge.services import importer
from imagebridge.services.ingest import Ingest

WORKERS = 4


def import_all(
    ingest: Ingest,
    candidates: Sequence[importer.Candidate],
    summary: importer.Summary,
    *,
    source: Any = None,
    advance: Callable[[], None] | None = None,
    workers: int = WORKERS,
) -> None:
    """Import every candidate into ``summary`` (``advance`` is called after each one)."""
    if source is not None or workers <= 1 or len(candidates) < 2:
        for candidate in candidates:
            importer.import_candidate(ingest, candidate, summary, source=source)
            if advance:
                advance()
        return
    parts: list[importer.Summary] = []
    local = threading.local()
    lock = threading.Lock()

    def one(candidate: importer.Candidate) -> None:
        if not hasattr(local, "summary"):
            local.summary = importer.Summary()
            with lock:
                parts.append(local.summary)
        importer.import_candidate(ingest, candidate, local.summary)
        if advance:
            advance()

    with ThreadPoolExecutor(workers, thread_name_prefix="import") as pool:
        for future in [pool.submit(one, c) for c in candidates]:
            future.result()
    for part in parts:
        merge(summary, part)


def merge(total: importer.Summary, part: importer.Summary) -> None:
    """Add ``part`` into ``total``, field by field (counts add, lists extend, maps update)."""
    for spec in dataclasses.fields(total):
        mine, theirs = getattr(total, spec.name), getattr(part, spec.name)
        if isinstance(mine, Counter):
            mine.update(theirs)
        elif isinstance(mine, list):
            mine.extend(theirs)
        elif isinstance(mine, dict):
            mine.update(theirs)
        elif isinstance(mine, int):
            setattr(total, spec.name, mine + theirs)
