"""files.write_once: the first text written stays; later writers get it back and leave no file."""

from __future__ import annotations

import stat
from pathlib import Path

from imagebridge.files import write_once


def test_the_first_text_stays(tmp_path: Path) -> None:
    path = tmp_path / "marker"
    assert write_once(path, "first\n") == "first\n"
    assert write_once(path, "second\n") == "first\n"
    assert path.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["marker"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
