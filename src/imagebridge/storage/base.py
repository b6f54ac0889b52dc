"""The blob store interface and the spool that received bytes land in first."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

_IOV_MAX = 512
"""Buffers per ``writev`` call (Linux allows 1024)."""


class BlobStore(Protocol):
    """Content-addressed storage of instance files; keys are SHA-256 hex digests."""

    def spool(self) -> Spool:
        """A new spool in the store's own temporary area."""

    def put(self, spool: Spool) -> str:
        """Make the spooled bytes durable under their digest; returns the key. The spool keeps
        its bytes until discarded (for :meth:`ensure`)."""

    def open(self, key: str) -> BinaryIO:
        """A binary file object positioned at the start of the blob."""

    def path(self, key: str) -> Path | None:
        """A local path to the blob, when the store has one (fast paths use it)."""

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def ensure(self, spool: Spool) -> None:
        """Put the spool's blob back if a concurrent :meth:`remove` took it before the index
        row naming it was filed (call after filing; storage/fs.py says why)."""

    def remove(self, key: str, in_use: Callable[[], bool]) -> bool:
        """Remove the blob unless ``in_use()``, asked once the blob is out of reach, says the
        index names it; returns whether it went. Removing an absent blob is not an error."""

    def keys(self) -> Iterator[str]: ...


class Spool:
    """A temporary file that received bytes are written to, hashing as they arrive.

    Created in the store's own temporary directory so that making it durable is a hard link
    on the same file system (atomic: readers see all of it or none), and the spool keeps the
    bytes under its own name until it is discarded.

    With ``direct``, the bytes go to the disk with ``O_DIRECT`` (:class:`_Direct`), past the
    page cache, where the file system allows it; otherwise, and on a file system that refuses
    it, they are written through the page cache as usual.
    """

    def __init__(self, directory: Path, *, direct: bool = False) -> None:
        try:
            fd, name = _create(directory, direct)
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = _create(directory, direct)
        self.path = Path(name)
        self._fd = fd
        self._hash = hashlib.sha256()
        self.size = 0
        self._closed = False
        self._direct = _Direct.start(fd, self._hash) if direct and _is_direct(fd) else None
        self._went_direct = False
        self._after_direct = False

    @property
    def direct(self) -> bool:
        """Whether the bytes written so far went past the page cache."""
        return self._direct.on if self._direct is not None else self._went_direct

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.write_all((data,))

    def write_all(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write the chunks in order with as few system calls as the kernel allows (``writev``,
        or whole buffers with ``O_DIRECT``): each call lets another thread take the interpreter,
        so one per chunk cost switches."""
        views = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
        if self._direct is not None:
            self._direct.write(views)  # hashes a buffer at a time, as it writes it
        else:
            if self._after_direct:
                _Direct.after(self._fd, self.size)
                self._after_direct = False
            for view in views:
                self._hash.update(view)
            _writev_all(self._fd, views)
        self.size += sum(view.nbytes for view in views)

    def flush(self) -> None:
        """Make the bytes readable through ``path`` (not yet durable); later writes, if any, go
        through the page cache."""
        if self._direct is not None:
            self._went_direct, self._after_direct = self._direct.on, True
            self._direct.finish(self.size)
            self._direct = None

    def finish(self) -> None:
        """Flush and fsync, so that a later rename publishes complete bytes."""
        if not self._closed:
            self.flush()
            os.fsync(self._fd)
            self._close()

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Close and unlink the spool's name (a blob put from it keeps its own)."""
        self._close()
        self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._direct is not None:
            self._direct.release()
            self._direct = None
        if not self._closed:
            os.close(self._fd)
            self._closed = True

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _create(directory: Path, direct: bool) -> tuple[int, str]:
    """A new file of our own (as ``mkstemp``: 0600, never an existing one), opened with
    ``O_DIRECT`` when asked and the file system takes it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        name = os.path.join(directory, f"{_SPOOL_PREFIX}{secrets.token_hex(8)}{_SPOOL_SUFFIX}")
        try:
            if direct:
                try:
                    return os.open(name, flags | os.O_DIRECT, 0o600), name
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(directory))


_SPOOL_PREFIX, _SPOOL_SUFFIX = "tmp", ".part"


def is_spool_name(name: str) -> bool:
    """Whether ``name`` is that of a spool's file (as :func:`_create` names them)."""
    return name.startswith(_SPOOL_PREFIX) and name.endswith(_SPOOL_SUFFIX)


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def _clear_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


def _writev_all(fd: int, views: list[memoryview]) -> None:
    """Write every byte of ``views`` at the file's offset (``writev`` may write less than asked)."""
    remaining = list(views)
    while remaining:
        written = os.writev(fd, remaining[:_IOV_MAX])
        while remaining and written >= remaining[0].nbytes:
            written -= remaining.pop(0).nbytes
        if written:
            remaining[0] = remaining[0][written:]


BLOCK = 4096
"""``O_DIRECT`` writes whole blocks from aligned memory (4096 covers 512- and 4096-byte disks)."""
DIRECT_BUFFER = 1024 * 1024
"""Bytes gathered before one ``O_DIRECT`` write. A CT slice (~512 KiB) goes in one write instead of
three (256 KiB buffers): two system calls and two waits for the disk fewer per instance; STOW-RS
of the bench CT with 4 clients, side by side, 439 -> 465 and 439 -> 458 instances/s (medians of 12
alternating rounds; all 24 rounds faster). A buffer's pages are touched only as far as
instances fill it."""
_IDLE_BUFFERS = 8
_buffers: list[mmap.mmap] = []
_buffers_lock = threading.Lock()


class _Direct:
    """A spool's bytes written with ``O_DIRECT``: copied into a page-aligned buffer and written
    to the disk a buffer at a time, never into the page cache.

    Writing a received instance through the page cache copies it into cache pages in the
    kernel; on a machine whose memory is full of cache (or, in a virtual machine, not yet
    touched), finding those pages costs more CPU than anything else storing does, and the cache
    fills with files nobody reads soon, pushing out those that are read. Here the kernel
    writes the buffer straight to the disk and the file's last, partial block is padded and
    cut back (``ftruncate``). A file system that refuses ``O_DIRECT`` (at the start or at a
    write) gets the rest of the bytes through the page cache; nothing is lost either way."""

    def __init__(self, fd: int, digest: Any, buffer: mmap.mmap) -> None:
        self.fd, self.digest, self.buffer = fd, digest, buffer
        self.view = memoryview(buffer)
        self.fill = 0
        """Bytes in the buffer not yet written."""
        self.offset = 0
        """Bytes written to the file (whole blocks while ``on``)."""
        self.on = True

    @classmethod
    def start(cls, fd: int, digest: Any) -> _Direct:
        """For ``fd``, opened with ``O_DIRECT``; ``digest`` is updated with every byte written."""
        with _buffers_lock:
            buffer = _buffers.pop() if _buffers else None
        return cls(fd, digest, buffer if buffer is not None else mmap.mmap(-1, DIRECT_BUFFER))

    def write(self, views: list[memoryview]) -> None:
        size = len(self.buffer)
        for view in views:
            while view.nbytes:
                n = min(view.nbytes, size - self.fill)
                self.view[self.fill : self.fill + n] = view[:n]
                self.fill += n
                view = view[n:]
                if self.fill == size:
                    self._write(self.fill)

    def finish(self, size: int) -> None:
        """Write what is left (its last block padded) and cut the file to ``size``. Should
        anything be written after, the descriptor is first turned to the page cache and the end
        of the file (``after``)."""
        try:
            if self.fill:
                fill = self.fill
                padded = -(-fill // BLOCK) * BLOCK if self.on else fill
                self.view[fill:padded] = bytes(padded - fill)
                self._write(padded, fill)
                if self.offset != size:
                    os.ftruncate(self.fd, size)
        finally:
            self.release()

    @staticmethod
    def after(fd: int, size: int) -> None:
        """Turn ``fd`` from ``O_DIRECT`` (if still set) to the page cache, positioned at ``size``,
        its end (the writes before went by offset, ``pwrite``, and left the position at 0)."""
        _clear_direct(fd)
        os.lseek(fd, size, os.SEEK_SET)

    def _write(self, count: int, real: int | None = None) -> None:
        """Hash the buffer's first ``real`` bytes (the rest is padding) and write ``count``."""
        self.digest.update(self.view[: count if real is None else real])
        data = self.view[:count]
        while data.nbytes:
            try:
                written = os.pwrite(self.fd, data, self.offset)
            except OSError as exc:
                if not self.on or exc.errno != errno.EINVAL:
                    raise
                self._off()  # refused (alignment this file system does not accept): go on cached
                continue
            self.offset += written
            data = data[written:]
            if data.nbytes and written % BLOCK:
                self._off()  # a short write left the offset unaligned
        self.fill = 0

    def _off(self) -> None:
        if self.on:
            _clear_direct(self.fd)
            self.on = False

    def release(self) -> None:
        """Give the buffer back for another spool (a few are kept)."""
        if self.buffer is None:
            return
        self.view.release()
        with _buffers_lock:
            if len(_buffers) < _IDLE_BUFFERS:
                _buffers.append(self.buffer)
            else:
                self.buffer.close()
        self.buffer = None  # type: ignore[assignment]
