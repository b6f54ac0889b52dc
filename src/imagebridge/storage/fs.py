"""Blobs as files under the data directory: ``blobs/ab/<sha256>.dcm``.

A store made before this layout keeps ``blobs/ab/cd/<sha256>.dcm`` (two levels of folders):
the file ``blobs/LAYOUT`` says which a store uses, written when the store is first opened.
With one level, the 256 folders are made with the store, so storing a blob never makes a folder
and makes one folder's entries durable (one directory fsync); with two, a new blob nearly always
landed in a new folder of the 65,536, and paid a ``mkdir`` and two directory fsyncs. ext4 (and
XFS) index large directories: 40,000 files a folder at ten million instances is no burden."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imagebridge.errors import StorageFailure
from imagebridge.files import write_once
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
        self.levels = _layout(root)
        """Folder levels above a blob: 1 (``ab/``), or 2 (``ab/cd/``) in a store made before."""

    def spool(self) -> Spool:
        return Spool(self.tmp, direct=self.direct)

    def _path(self, key: str) -> Path:
        if _KEY.fullmatch(key) is None:
            raise StorageFailure(f"malformed blob key {key!r}")
        if self.levels == 1:
            return self.root / key[:2] / f"{key}.dcm"
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
        for path in self.root.glob("??/*.dcm" if self.levels == 1 else "??/??/*.dcm"):
            yield path.stem


LAYOUT = "LAYOUT"
"""The file in the store's root that holds its number of folder levels."""


def _layout(root: Path) -> int:
    """The store's folder levels: read from ``LAYOUT``, or decided now and written. A store that
    already holds two-level folders (made before ``LAYOUT`` existed) keeps two; a new or empty
    one gets one, with its 256 folders. Processes opening a new store together agree: the
    first ``LAYOUT`` written wins and every other reads it."""
    marker = root / LAYOUT
    try:
        return _levels(marker.read_text())
    except FileNotFoundError:
        pass
    old = any(
        len(p.name) == 2 and any(c.is_dir() for c in p.iterdir()) for p in root.glob("??") if p.is_dir()
    )
    levels = 2 if old else 1
    if levels == 1:
        for n in range(256):
            (root / f"{n:02x}").mkdir(exist_ok=True)
    _fsync_dir(root)  # the folders made above, before LAYOUT says they are there
    return _levels(write_once(marker, f"{levels}\n"))


def _levels(text: str) -> int:
    value = text.strip()
    if value not in ("1", "2"):
        raise StorageFailure(f"the blob store's {LAYOUT} file says {value!r}; expected 1 or 2")
    return int(value)


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
