"""The spool written with O_DIRECT (storage/base.py ``_Direct``): the same bytes, digest and size
as through the page cache, for every way of cutting them; the page cache stays empty; a file
system or a write that refuses O_DIRECT gets the bytes through the cache instead."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import mmap
import os
from pathlib import Path

import pytest

from imagebridge.storage import base
from imagebridge.storage.base import BLOCK, DIRECT_BUFFER, Spool


def _supports_direct(folder: Path) -> bool:
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    if not _supports_direct(tmp_path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT (the fallback is tested below)")
    return tmp_path


def _resident_pages(path: Path) -> int:
    """Pages of the file in the page cache (mincore(2) over a mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        vector = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) == 0
        resident = sum(v & 1 for v in vector)
        del address
    return resident


CUTS = [
    [1],
    [BLOCK],
    [BLOCK + 1],
    [DIRECT_BUFFER],
    [DIRECT_BUFFER - 1, 1, 1],
    [2 * DIRECT_BUFFER + 5],
    [100, 5000, 300_000, 7, 0, 65_536],
    [0],
]


@pytest.mark.parametrize("cut", CUTS, ids=[",".join(map(str, c)) for c in CUTS])
def test_direct_spool_keeps_every_byte(folder: Path, cut: list[int]) -> None:
    chunks = [os.urandom(n) for n in cut]
    data = b"".join(chunks)
    spool = Spool(folder, direct=True)
    assert fcntl.fcntl(spool._fd, fcntl.F_GETFL) & os.O_DIRECT
    spool.write_all(chunks[:1])
    for chunk in chunks[1:]:
        spool.write(memoryview(chunk))
    spool.finish()
    assert spool.direct
    assert spool.path.read_bytes() == data
    assert spool.size == len(data) and spool.digest == hashlib.sha256(data).hexdigest()
    spool.discard()
    assert not spool.path.exists()


def test_direct_spool_leaves_the_page_cache_alone(folder: Path) -> None:
    data = os.urandom(3 * DIRECT_BUFFER + 1234)
    spool = Spool(folder, direct=True)
    spool.write(data)
    spool.finish()
    assert _resident_pages(spool.path) <= 1  # at most the last, partial block
    cached = Spool(folder)
    cached.write(data)
    cached.finish()
    assert _resident_pages(cached.path) == -(-len(data) // mmap.PAGESIZE)


def test_writing_after_flush_goes_on_through_the_cache(folder: Path) -> None:
    spool = Spool(folder, direct=True)
    spool.write(b"a" * 5000)
    spool.flush()
    assert spool.path.read_bytes() == b"a" * 5000
    spool.write(b"b" * 3)
    spool.finish()
    assert spool.path.read_bytes() == b"a" * 5000 + b"bbb"
    assert spool.digest == hashlib.sha256(b"a" * 5000 + b"bbb").hexdigest()


def test_a_file_system_that_refuses_o_direct_gets_the_bytes_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refusing(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing)
    data = os.urandom(DIRECT_BUFFER + 17)
    spool = Spool(tmp_path, direct=True)
    spool.write(data)
    spool.finish()
    assert not spool.direct and spool.path.read_bytes() == data


def test_a_write_refused_midway_goes_on_through_the_cache(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwrite = os.pwrite
    calls: list[bool] = []

    def refuse_the_second(fd: int, data: memoryview, offset: int) -> int:
        calls.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT))
        if len(calls) == 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse_the_second)
    data = os.urandom(3 * DIRECT_BUFFER + 99)
    spool = Spool(folder, direct=True)
    spool.write(data)
    spool.flush()
    spool.write(b"tail")  # after the flush: appended, not written over the start
    spool.finish()
    assert calls[:2] == [True, True] and not any(calls[2:])
    assert not spool.direct and spool.path.read_bytes() == data + b"tail"
    assert spool.digest == hashlib.sha256(data + b"tail").hexdigest()


def test_buffers_are_reused_not_piled_up(folder: Path) -> None:
    spools = [Spool(folder, direct=True) for _ in range(base._IDLE_BUFFERS + 4)]
    for spool in spools:
        spool.write(b"x" * 10)
    for spool in spools[:3]:
        spool.discard()  # never finished: the buffer goes back all the same
    for spool in spools[3:]:
        spool.finish()
    assert len(base._buffers) == base._IDLE_BUFFERS
    idle = list(base._buffers)
    again = Spool(folder, direct=True)
    assert again._direct is not None and any(buffer is again._direct.buffer for buffer in idle)
    again.discard()


@pytest.mark.parametrize("direct", [False, True])
def test_the_setting_decides_how_ingest_writes(folder: Path, direct: bool) -> None:
    """``direct_writes`` reaches the store: an instance stored by ingest was spooled past the page
    cache only when it is on, and is stored byte for byte either way."""
    from tests.conftest import make_archive
    from tests.factory import make_instance, part10

    archive = make_archive(folder, f"sqlite:///{folder / 'index.sqlite3'}", direct_writes=direct)
    try:
        data = part10(make_instance(pixels=300))
        spools: list[Spool] = []
        real_spool = archive.blobs.spool

        def recorded() -> Spool:
            spools.append(real_spool())
            return spools[-1]

        archive.ingest.blobs.spool = recorded  # type: ignore[method-assign]
        stored = archive.ingest.store_stream(io.BytesIO(data))
        assert [spool.direct for spool in spools] == [direct]
        key = archive.catalog.stored_blob(stored.sop_uid)
        assert key is not None and archive.blobs.open(key).read() == data
    finally:
        archive.close()


def _spooled(folder: Path, data: bytes) -> Path:
    spool = Spool(folder, direct=True)
    spool.write(data)
    spool.finish()
    assert _resident_pages(spool.path) <= 1
    return spool.path


def test_files_not_cached_are_read_into_the_cache_before_they_are_sent(folder: Path) -> None:
    """WADO-RS's ``read_ahead``: files written past the cache are in it when it returns (the
    event loop sending them never waits for the disk); cached ones are only looked at."""
    from imagebridge.services.retrieve import read_ahead

    contents = [os.urandom(2 * DIRECT_BUFFER + 5000), os.urandom(3000)]
    paths = [_spooled(folder, data) for data in contents]
    with paths[0].open("rb") as first, paths[1].open("rb") as second:
        files = [(first.fileno(), len(contents[0])), (second.fileno(), len(contents[1]))]
        assert read_ahead(files) == [True, True]
        assert [_resident_pages(p) for p in paths] == [-(-len(d) // mmap.PAGESIZE) for d in contents]
        assert read_ahead(files) == [False, False]
        assert [first.read(), second.read()] == contents


def test_a_large_file_is_only_read_ahead(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Larger than ``CACHED_BEFORE_SENDING``: its first bytes should not wait for all of it."""
    from imagebridge.services import retrieve

    monkeypatch.setattr(retrieve, "CACHED_BEFORE_SENDING", DIRECT_BUFFER)
    waited: list[int] = []
    monkeypatch.setattr(retrieve, "_wait_cached", lambda fd, size: waited.append(size))
    path = _spooled(folder, os.urandom(DIRECT_BUFFER + 1))
    with path.open("rb") as fh:
        assert retrieve.read_ahead([(fh.fileno(), DIRECT_BUFFER + 1), (fh.fileno(), 0)]) == [True, False]
    assert waited == []
