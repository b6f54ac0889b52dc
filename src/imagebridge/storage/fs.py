"""Blobs as files under the data directory: ``blobs/ab/<sha256>.dcm``.

A store made before this layout keeps ``blobs/ab/cd/<sha256>.dcm`` (two levels of folders):
the file ``blobs/LAYOUT`` says which a store uses, written when the store is first opened.
With one level, the 256 folders are made with the store, so storing a blob never makes a folder
and makes one folder's entries durable (one directory fsync); with two, a new blob nearly always
landed in a new folder of the 65,536, and paid a ``mkdir`` and two directory fsyncs. ext4 (and
XFS) index large directories: 40,000 files a folder at ten million instances is no burden.

Removing a blob races with storing the same bytes again (a DICOMweb DELETE while the instance
is sent once more): the store may find the blob there, or put it, and file its index row just
as the remover decides nothing names the blob any more. So a blob is put as a second name of its
spool, which keeps the bytes until the store has filed the row and checked the blob is still in
place (:meth:`FileBlobStore.ensure`, putting it back when not); and a remover first moves the
blob out of reach, then asks the index, and moves it back if a row names it. Whichever way the
two interleave, a filed row ends with its blob in place."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from imagebridge.errors import StorageFailure
from imagebridge.files import write_once
from imagebridge.storage.base import Spool, is_spool_name

_KEY = re.compile(r"[0-9a-f]{64}")
"""A blob key: a SHA-256 digest in lower-case hex (checked before it becomes a path)."""


class FileBlobStore:
    """Durable, atomic, content-addressed files (spool, fsync, hard link, fsync dir)."""

    def __init__(self, root: Path, *, direct: bool = False) -> None:
        self.root = root
        self.direct = direct
        """Spool with ``O_DIRECT`` (storage/base.py ``_Direct``)."""
        self.tmp = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.levels = _layout(root)
        """Folder levels above a blob: 1 (``ab/``), or 2 (``ab/cd/``) in a store made before."""
        self._tidy()

    def _tidy(self) -> None:
        """What stopped processes left in ``tmp/``. Blobs a :meth:`remove` had moved out of reach
        go back where they were: the index may name them (one nothing names is kept, as after a
        stop between a delete's index commit and its removal of the blob). Spools untouched for
        :data:`STALE_SPOOL_S` are removed: a live one is written to as its bytes arrive, and a
        blob put from one is a name of its own, so no stored bytes go with it."""
        stale_before = time.time() - STALE_SPOOL_S
        for entry in os.scandir(self.tmp):
            try:
                if entry.name.endswith(_REMOVING):
                    key = entry.name.split(".", 1)[0]
                    if _KEY.fullmatch(key) is not None:
                        _put_back(Path(entry.path), self._path(key))
                    os.unlink(entry.path)
                elif is_spool_name(entry.name) and entry.stat().st_mtime < stale_before:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass  # another process opening the store, or the owner itself, finished it

    def spool(self) -> Spool:
        return Spool(self.tmp, direct=self.direct)

    def _path(self, key: str) -> Path:
        if _KEY.fullmatch(key) is None:
            raise StorageFailure(f"malformed blob key {key!r}")
        if self.levels == 1:
            return self.root / key[:2] / f"{key}.dcm"
        return self.root / key[:2] / key[2:4] / f"{key}.dcm"

    def put(self, spool: Spool) -> str:
        """Make the spooled bytes durable under their digest: the blob is a second name (a hard
        link) of the spool's file, which keeps its own until the spool is discarded. The same
        bytes there already are left as they are."""
        spool.finish()
        key = spool.digest
        try:
            _link_durably(spool.path, self._path(key))
        except OSError as exc:
            spool.discard()
            raise StorageFailure(f"could not store blob: {exc.strerror}") from exc
        return key

    def ensure(self, spool: Spool) -> None:
        """After the index has filed the row naming the spool's blob: put the blob back if a
        :meth:`remove` took it away before that row was there to see (module docstring)."""
        if not self._path(spool.digest).exists():
            self.put(spool)

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

    def remove(self, key: str, in_use: Callable[[], bool]) -> bool:
        """Remove the blob unless ``in_use()``, asked once the blob is out of reach, says the index
        names it (a store of the same bytes filed meanwhile); returns whether it went. An absent
        blob is not an error. Should the process stop half-way, the next open puts it back."""
        target = self._path(key)
        held = self.tmp / f"{key}.{secrets.token_hex(4)}{_REMOVING}"
        try:
            os.rename(target, held)
        except FileNotFoundError:
            return False
        try:
            named = in_use()
        except BaseException:
            _put_back(held, target)
            held.unlink(missing_ok=True)
            raise
        if named:
            _put_back(held, target)  # should this fail, the held blob stays for the next open
        held.unlink(missing_ok=True)  # missing: another process opening the store put it back
        return not named

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


STALE_SPOOL_S = 24 * 3600
"""A spool in ``tmp/`` not written to for this long belongs to a process that stopped."""
_REMOVING = ".removing"
"""Suffix of a blob :meth:`FileBlobStore.remove` holds in ``tmp/`` while it asks the index."""


def _link_durably(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target`` too (left alone when it exists: the same bytes, as
    its name is their digest) and make the name durable: fsync the target's folder (also when
    the name was there: whoever made it may not have fsynced it yet) and, for each folder
    created on the way (only when missing: no mkdir call per store once they exist), the one
    holding it."""
    created: list[Path] = []
    try:
        _link_unless_there(source, target)
    except FileNotFoundError:
        if not source.exists():
            raise
        created = _make_folders(target.parent)
        _link_unless_there(source, target)
    for directory in [target.parent, *(folder.parent for folder in created)]:
        _fsync_dir(directory)


def _link_unless_there(source: Path, target: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.link(source, target)


def _put_back(held: Path, target: Path) -> None:
    """The blob ``held`` in ``tmp/`` under its name again, durably (kept if the name is taken).
    A held blob already gone is fine when its name is back: a process opening the store put it
    back meanwhile."""
    try:
        _link_durably(held, target)
    except FileNotFoundError:
        if not target.exists():
            raise


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
