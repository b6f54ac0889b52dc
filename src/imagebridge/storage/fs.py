"""Blobs as files under the data directory: ``blobs/ab/cd/<sha256>.dcm``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imagebridge.errors import StorageFailure
from imagebridge.storage.base import Spool


class FileBlobStore:
    """Durable, atomic, content-addressed files (temp file, fsync, rename, fsync dir)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)

    def spool(self) -> Spool:
        return Spool(self.tmp)

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise StorageFailure(f"malformed blob key {key!r}")
        return self.root / key[:2] / key[2:4] / f"{key}.dcm"

    def put(self, spool: Spool) -> str:
        spool.finish()
        key = spool.digest
        target = self._path(key)
        try:
            _replace(spool.path, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            spool.discard()
            raise StorageFailure(f"could not store blob: {exc.strerror}") from exc
        return key

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise StorageFailure(f"blob {key} is missing from the store") from exc

    def path(self, key: str) -> Path | None:
        return self._path(key)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for path in self.root.glob("??/??/*.dcm"):
            yield path.stem


def _replace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, creating the target's folders only when they are missing
    (no mkdir call per store once the folders exist)."""
    try:
        os.replace(source, target)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
