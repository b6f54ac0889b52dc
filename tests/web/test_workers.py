"""``serve --workers N`` forks only from a parent with no other thread (a fork copies held locks)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imagebridge.config import Settings
from imagebridge.web import workers
from imagebridge.web.server import bind


def test_run_refuses_to_fork_beside_another_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the check, the test fails here instead of forking a server that never returns.
    monkeypatch.setattr(workers.os, "fork", lambda: pytest.fail("forked while another thread ran"))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="still-running", daemon=True)
    other.start()
    sock = bind("127.0.0.1", 0)
    try:
        with pytest.raises(workers.CannotFork, match="still-running"):
            workers.run(Settings(data_dir=tmp_path, http_workers=2), sock)
    finally:
        stop.set()
        other.join(5)
        sock.close()
