"""The blob store interface and the spool that received bytes land in first."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

_IOV_MAX = 512
"""Buffers per ``writev`` call (Linux allows 1024)."""


class BlobStore(Protocol):
    """Content-addressed storage of instance files; keys are SHA-256 hex digests."""

    def spool(self) -> Spool:
        """A new spool in the store's own temporary area."""

    def put(self, spool: Spool) -> str:
        """Make the spooled bytes durable under their digest; returns the key."""

    def open(self, key: str) -> BinaryIO:
        """A binary file object positioned at the start of the blob."""

    def path(self, key: str) -> Path | None:
        """A local path to the blob, when the store has one (fast paths use it)."""

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the blob; removing an absent blob is not an error."""

    def keys(self) -> Iterator[str]: ...


class Spool:
    """A temporary file that received bytes are written to, hashing as they arrive.

    Created in the store's own temporary directory so that making it durable is
    a rename on the same file system (atomic: readers see all of it or none).
    """

    def __init__(self, directory: Path) -> None:
        try:
            fd, name = tempfile.mkstemp(dir=directory, suffix=".part")
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=directory, suffix=".part")
        self.path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def write_all(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write the chunks in order with as few system calls as the kernel allows (``writev``):
        each call lets another thread take the interpreter, so one per chunk cost switches."""
        self._file.flush()
        fd = self._file.fileno()
        for chunk in chunks:
            self._hash.update(chunk)
        remaining = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
        while remaining:
            written = os.writev(fd, remaining[:_IOV_MAX])
            self.size += written
            while remaining and written >= remaining[0].nbytes:
                written -= remaining.pop(0).nbytes
            if written:
                remaining[0] = remaining[0][written:]

    def flush(self) -> None:
        """Make the bytes readable through ``path`` (not yet durable)."""
        if not self._closed:
            self._file.flush()

    def finish(self) -> None:
        """Flush and fsync, so that a later rename publishes complete bytes."""
        if not self._closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self._closed:
            self._file.close()
            self._closed = True
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
