"""In-process durable ingest rate: the 500-slice CT stored from 1 and 4 threads, SQLite and PostgreSQL.

Measures ``Ingest.store_stream`` alone (no HTTP, no DIMSE), with the real fsyncs, so that a
change to the storage path can be judged on a machine that also runs other work:

    .venv/bin/python -m bench.ingest                    # both backends, 1 and 4 threads, median of 3
    .venv/bin/python -m bench.ingest --backends sqlite --threads 4 --runs 1

Each run stores into a fresh archive (a temporary data dir under the bench cache, on the same
disk as a real data dir, and a fresh PostgreSQL database), so every instance is new.
Single runs vary by 2x on a machine that also runs other work: to compare two versions of the
code, run them alternately (for example with ``PYTHONPATH`` pointing at an exported older
``src``) and compare medians.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from bench.synth import ct_series
from imagebridge.config import Settings
from imagebridge.index.db import scratch_database
from imagebridge.services.archive import open_archive

CACHE = Path(__file__).parent / ".cache"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def _database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'index.sqlite3'}"
        return
    yield from scratch_database(PG_ADMIN_URL, "ib_bench")


def one_run(backend: str, threads: int, slices: list[bytes]) -> float:
    """Instances per second for storing ``slices`` from ``threads`` threads into a fresh archive."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp, _database(backend, Path(tmp)) as url:
        archive = open_archive(Settings(data_dir=Path(tmp) / "data", database_url=url))
        try:
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(lambda data: archive.ingest.store_stream(io.BytesIO(data)), slices):
                    pass
            elapsed = time.perf_counter() - start
        finally:
            archive.close()
    return len(slices) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=500)
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    slices = ct_series(CACHE, args.slices).read_all()
    print(f"{len(slices)} instances, {sum(map(len, slices)) / 1e6:.0f} MB; inst/s, median of {args.runs}")
    for backend in args.backends.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            rates = [one_run(backend, threads, slices) for _ in range(args.runs)]
            runs = " ".join(f"{r:.0f}" for r in rates)
            print(
                f"{backend:<11} {threads} thread(s): {statistics.median(rates):6.0f}  (runs: {runs})",
                flush=True,
            )


if __name__ == "__main__":
    main()
