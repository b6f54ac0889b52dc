"""The signing key in the data directory: made once, even by processes starting together."""

from __future__ import annotations

import multiprocessing
import stat
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

from imagebridge.auth import jwks

KEYS = [RSAKey.generate_key(2048, auto_kid=True) for _ in range(8)]
"""Made beforehand, so that the processes below reach the file at nearly the same moment."""


def _make(data_dir: str, number: int, start: Barrier, out: Queue[str]) -> None:
    RSAKey.generate_key = lambda *args, **kwargs: KEYS[number]  # type: ignore[method-assign]
    start.wait()
    out.put(jwks.load_or_create(Path(data_dir)).kid)


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    """The workers of ``serve --workers N`` make the key at the same moment on a new data dir;
    every one must come up signing with the one key on disk (one start in five failed when
    they shared a temporary file name, and a key could be overwritten after it was read)."""
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        data_dir = tmp_path / f"data-{attempt}"
        start, out = context.Barrier(len(KEYS)), context.Queue()
        makers = [
            context.Process(target=_make, args=(str(data_dir), n, start, out)) for n in range(len(KEYS))
        ]
        for maker in makers:
            maker.start()
        for maker in makers:
            maker.join(60)
        assert [maker.exitcode for maker in makers] == [0] * len(KEYS)
        kids = {out.get(timeout=5) for _ in makers}
        assert kids == {jwks.load_or_create(data_dir).kid}
        assert [p.name for p in data_dir.iterdir()] == ["oauth-signing-key.json"]
        assert stat.S_IMODE((data_dir / "oauth-signing-key.json").stat().st_mode) == 0o600


def test_a_key_made_meanwhile_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process stores its key while this one is still generating: both use that key."""
    generate = RSAKey.generate_key
    made_meanwhile: list[str] = []

    def generate_while_another_stores(*args: object, **kwargs: object) -> RSAKey:
        if not made_meanwhile:
            made_meanwhile.append("")
            made_meanwhile[0] = jwks.load_or_create(tmp_path).kid
        return generate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RSAKey, "generate_key", generate_while_another_stores)
    ours = jwks.load_or_create(tmp_path)
    assert ours.kid == made_meanwhile[0] == jwks.load_or_create(tmp_path).kid
    assert [p.name for p in tmp_path.iterdir()] == ["oauth-signing-key.json"]


def test_a_key_made_once_is_read_back(tmp_path: Path) -> None:
    first = jwks.load_or_create(tmp_path)
    again = jwks.load_or_create(tmp_path)
    assert again.kid == first.kid
    assert again.verify(first.sign({"sub": "x"})) == {"sub": "x"}
