"""The files inside what arrives on media: a folder, a zip archive, an ISO 9660 image.

Each container lists its members as :class:`Member` (a relative name with ``/`` separators, a
size and an opener), refusing what is unsafe before anything is read: names that climb out
(``../``, absolute paths, drive letters), zip members that inflate far beyond their compressed
size, symbolic links that leave the folder, special files. Nothing is ever extracted: members are
read as streams, and only the ingest path writes (content-addressed, inside the data directory).
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

MAX_MEMBER_BYTES = 8 * 1024**3
MAX_RATIO = 200
"""A zip member that inflates more than this many times its stored size is treated as a bomb."""
MAX_ARCHIVE_RATIO = 100
"""All members together may inflate to at most this many times the archive's size (plus 1 GiB)."""
ISO_MAGIC_OFFSET = 32769  # ISO 9660 §8.4: the first volume descriptor is in sector 16, "CD001"

Opener = Callable[[], AbstractContextManager[BinaryIO]]
Skipped = list[tuple[str, str]]


@dataclass(frozen=True)
class Member:
    name: str
    """Relative to the container, ``/``-separated, as written on the medium."""
    size: int
    opener: Opener
    path: Path | None = None
    """The member's own file, for members of a folder."""

    @property
    def key(self) -> str:
        """The name compared with DICOMDIR File IDs: upper case, without ISO 9660 ``;1`` or a trailing dot."""
        return "/".join(_plain(part).upper() for part in self.name.split("/"))


def _plain(component: str) -> str:
    return re.sub(r";\d+$", "", component).rstrip(".")


def unsafe_name(name: str) -> str | None:
    """Why an entry name may not be used, or None (path traversal, absolute, drive letter)."""
    if "\0" in name:
        return "unsafe name (NUL character)"
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        return "unsafe name (absolute path)"
    if any(part == ".." for part in PurePosixPath(normal).parts):
        return "unsafe name (path traversal)"
    return None


def folder_members(root: Path, skipped: Skipped) -> Iterator[Member]:
    """Regular files under ``root``; links may point anywhere inside it, never outside."""
    base = root.resolve()
    for directory, subdirs, files in os.walk(root, onerror=lambda e: skipped.append((e.filename, _why(e)))):
        subdirs.sort()
        for name in [*sorted(files), *[d for d in subdirs if os.path.islink(os.path.join(directory, d))]]:
            path = Path(directory, name)
            member = _folder_member(path, root, base, skipped)
            if member is not None:
                yield member


def _folder_member(path: Path, root: Path, base: Path, skipped: Skipped) -> Member | None:
    try:
        if path.is_symlink() and not path.resolve().is_relative_to(base):
            skipped.append((str(path), "symbolic link pointing outside the folder"))
            return None
        info = path.stat()
    except OSError as exc:
        skipped.append((str(path), _why(exc)))
        return None
    if stat.S_ISDIR(info.st_mode):
        skipped.append((str(path), "symbolic link to a folder (not followed)"))
        return None
    if not stat.S_ISREG(info.st_mode):
        skipped.append((str(path), "not a regular file"))
        return None
    return Member(path.relative_to(root).as_posix(), info.st_size, functools.partial(_open_file, path), path)


def _open_file(path: Path) -> BinaryIO:
    return path.open("rb")


def _why(exc: OSError) -> str:
    return f"unreadable: {exc.strerror or exc}"


def zip_members(source: Any, label: str, skipped: Skipped, archive_size: int) -> Iterator[Member]:
    """Members of a zip (a path or a seekable stream); ``label`` names it in reasons."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        skipped.append((label, f"damaged zip archive: {exc}"))
        return
    budget = MAX_ARCHIVE_RATIO * max(archive_size, 1) + 1024**3
    # The archive stays open while its members are imported (they may be listed first).
    for info in archive.infolist():
        name = f"{label}!{info.filename}"
        if info.is_dir():
            continue
        reason = unsafe_name(info.filename)
        if reason is None and (
            info.file_size > MAX_MEMBER_BYTES
            or info.file_size > MAX_RATIO * max(info.compress_size, 1) + 1024**2
            or info.file_size > budget
        ):
            reason = "refused: inflates far beyond its compressed size (zip bomb?)"
        if reason is not None:
            skipped.append((name, reason))
            continue
        budget -= info.file_size
        yield Member(info.filename, info.file_size, functools.partial(archive.open, info))  # type: ignore[arg-type]


def is_iso(path: Path) -> bool:
    try:
        with path.open("rb") as fp:
            fp.seek(ISO_MAGIC_OFFSET)
            return fp.read(5) == b"CD001"
    except OSError:
        return False


def iso_members(path: Path, skipped: Skipped) -> Iterator[Member]:
    """Files of an ISO 9660 image, read in place (no mount) through their ISO 9660 names, which
    are the names a DICOMDIR refers to (PS3.12 Annex F). pycdlib reads the directory tree; each
    file is then read straight from its extent with a file handle of its own, so members can be
    read by several threads at once."""
    try:
        found = _iso_files(path)
    except (PyCdlibException, OSError, ValueError, IndexError, KeyError, struct.error) as exc:
        skipped.append((str(path), f"damaged ISO image: {exc}"))
        return
    image_size = path.stat().st_size
    for iso_path, start, size in found:
        name = "/".join(_plain(part) for part in iso_path.lstrip("/").split("/"))
        reason = unsafe_name(name)
        if reason is None and (size < 0 or start + size > image_size):
            reason = "unreadable: the file runs past the end of the ISO image (truncated image?)"
        if reason is not None:
            skipped.append((f"{path}!{name}", reason))
            continue
        yield Member(name, size, functools.partial(_open_slice, path, start, size))


def _iso_files(path: Path) -> list[tuple[str, int, int]]:
    """(ISO 9660 path, byte offset, length) of every file of the image."""
    image = pycdlib.PyCdlib()
    image.open(str(path))
    try:
        found: list[tuple[str, int, int]] = []
        for directory, _subdirs, files in image.walk(iso_path="/"):
            for file_name in sorted(files):
                iso_path = f"{directory.rstrip('/')}/{file_name}"
                record = image.get_record(iso_path=iso_path)
                found.append(
                    (iso_path, record.extent_location() * image.logical_block_size, record.get_data_length())
                )
        return found
    finally:
        image.close()


def _open_slice(path: Path, start: int, size: int) -> BinaryIO:
    return io.BufferedReader(_Slice(path, start, size), buffer_size=1024 * 1024)


class _Slice(io.RawIOBase):
    """Bytes ``[start, start + size)`` of a file, as a file of their own."""

    def __init__(self, path: Path, start: int, size: int) -> None:
        self._fp = path.open("rb")
        self._start, self._size, self._pos = start, size, 0
        self.name = f"{path}@{start}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        self._fp.seek(self._start + self._pos)
        data = self._fp.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._fp.close()
        super().close()
