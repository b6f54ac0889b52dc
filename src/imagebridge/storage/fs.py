"""Blobs as files under the data directory: ``blobs/ab/cd/<sha256>.dcm``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imagebridge.errors import StorageFailure
from imagebridge.storage.base import Spool

_KEY = re.compile(r"[0-9a-f]{64}")
"""A blob key: a SHA-256 digest in lower-case hex (checked before it becomes a path)."""


class FileBlobStore:
    """Durable, atomic, content-addressed files (temp file, fsync, rename, fsync dir)."""

    def __init__(self, root: Path, *, direct: bool = False) -> None:
        self.root = root
        self.direct = direct
        """Spool with ``O_DIRECT`` (storage/base.py ``_Direct``)."""
        self.tmp = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)

    def spool(self) -> Spool:
        return Spool(self.tmp, direct=self.direct)

    def _path(self, key: str) -> Path:
        if _KEY.fullmatch(key) is None:
            raise StorageFailure(f"malformed blob key {key!r}")
        return self.root / key[:2] / key[2:4] / f"{key}.dcm"

    def put(self, spool: Spool) -> str:
        spool.finish()
        key = spool.digest
        target = self._path(key)
        try:
            changed = _replace(spool.path, target)
            spool.placed()
            for directory in changed:
                _fsync_dir(directory)
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


def _replace(source: Path, target: Path) -> list[Path]:
    """Rename ``source`` to ``target``; returns the folders whose entries changed, which must be
    fsynced for the rename to be durable: the target's folder and, for each folder created on
    the way (only when missing: no mkdir call per store once they exist), the one holding it."""
    try:
        os.replace(source, target)
        return [target.parent]
    except FileNotFoundError:
        created = _make_folders(target.parent)
        os.replace(source, target)
        return [target.parent, *(folder.parent for folder in created)]


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing ancestors (top down); returns those it created, deepest
    first (or that a concurrent store created at the same moment: their entries need an fsync
    all the same)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return missing


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
