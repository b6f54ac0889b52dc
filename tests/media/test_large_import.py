"""Issue 6 asks for an import of at least 10 000 instances: a disc-like folder of small synthetic
CT instances goes through the real command line into a fresh data directory, every one is in
the index afterwards, and a second import of the same disc changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from bench.media_import import build, run_import

from imagebridge.index.schema import instances, studies

COUNT = 10_000


def test_an_import_of_ten_thousand_instances(tmp_path: Path) -> None:
    disc, data = tmp_path / "disc", tmp_path / "data"
    size = build(disc, COUNT)
    seconds, output = run_import(disc, data)
    assert re.search(rf"\bstored\W+{COUNT}\b", output), output
    print(
        f"\nimported {COUNT} instances ({size / 1e6:.1f} MB) in {seconds:.1f} s: {COUNT / seconds:.0f} instances/s"
    )

    engine = sa.create_engine(f"sqlite:///{data / 'index.sqlite3'}")
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(instances)) == COUNT
        assert conn.scalar(sa.select(sa.func.count()).select_from(studies)) == COUNT // 100
    engine.dispose()

    _, again = run_import(disc, data)
    assert re.search(rf"already present\W+{COUNT}\b", again), again
    assert re.search(r"\bstored\W+0\b", again), again
