"""Find the DICOM instances on what arrives: folders, discs (a DICOMDIR file set), zips, ISO images.

A container holding a ``DICOMDIR`` is read through it (PS3.10 §8, IHE PDI): the files it names are
the candidates, in its order; named files that are missing are reported; files it does not name
are left out and listed. A DICOMDIR that cannot be read, or that names nothing that exists, is
noted and its folder is scanned instead. Zips inside the medium are opened one level deep.
Viewer programs, web pages, pictures and documents found on discs are skipped and listed by kind.

Every candidate or refusal is recorded; nothing is written here (see ``services/importer``).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import pydicom
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from imagebridge.media.containers import (
    Member,
    Skipped,
    folder_members,
    is_iso,
    iso_members,
    unsafe_name,
    zip_members,
)
from imagebridge.services.importer import Candidate, looks_like_dicom

NOT_DICOM = "not a DICOM file"
KINDS = {
    "viewer program": {
        ".exe",
        ".dll",
        ".com",
        ".bat",
        ".cmd",
        ".msi",
        ".so",
        ".dylib",
        ".jar",
        ".ocx",
        ".sys",
    },
    "web page": {".htm", ".html", ".css", ".js", ".xml", ".xsl", ".xslt", ".swf"},
    "picture": {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".ico", ".tif", ".tiff", ".svg"},
    "document": {".txt", ".pdf", ".doc", ".docx", ".rtf", ".ini", ".cfg", ".log", ".csv", ".md"},
}
AUTORUN = {"autorun.inf", "autorun.exe", "desktop.ini", ".ds_store", "thumbs.db"}
MAX_DICOMDIR_BYTES = 256 * 1024**2
FILESET_RECORDS = 4000
"""Up to this many directory records a folder's DICOMDIR is read with pydicom's FileSet."""


def discover(paths: Iterable[Path], skipped: Skipped, notes: list[str] | None = None) -> Iterator[Candidate]:
    """Candidates under ``paths``; what is left out goes to ``skipped`` with its reason, and
    decisions worth knowing (a DICOMDIR ignored) go to ``notes``."""
    notes = notes if notes is not None else []
    for path in paths:
        if not path.exists() and not path.is_symlink():
            skipped.append((str(path), "no such file or folder"))
        elif path.is_dir():
            yield from _medium(str(path), "/", folder_members(path, skipped), skipped, notes)
        elif path.name.upper() == "DICOMDIR":
            notes.append(f"{path}: reading the whole folder {path.parent} through its DICOMDIR")
            yield from _medium(str(path.parent), "/", folder_members(path.parent, skipped), skipped, notes)
        else:
            yield from _single_file(path, skipped, notes)


def _single_file(path: Path, skipped: Skipped, notes: list[str]) -> Iterator[Candidate]:
    try:
        size = path.stat().st_size
        head = _head_of(path)
    except OSError as exc:
        skipped.append((str(path), f"unreadable: {exc.strerror or exc}"))
        return
    if looks_like_dicom(head):
        yield Candidate(str(path), size, lambda: path.open("rb"))
    elif head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        yield from _medium(str(path), "!", zip_members(path, str(path), skipped, size), skipped, notes)
    elif is_iso(path):
        yield from _medium(str(path), "!", iso_members(path, skipped), skipped, notes)
    else:
        yield Candidate(str(path), size, lambda: path.open("rb"))


def _head_of(path: Path) -> bytes:
    with path.open("rb") as fp:
        return fp.read(132)


def _medium(
    label: str,
    sep: str,
    members: Iterable[Member],
    skipped: Skipped,
    notes: list[str],
    *,
    nested: bool = False,
) -> Iterator[Candidate]:
    """Candidates of one container (``label``, then ``sep``, then a member's name): through its
    DICOMDIR files where they work, else scanned."""
    listed = list(members)
    directories = [m for m in listed if _is_dicomdir(m)]
    claimed: dict[str, str] = {}  # member key -> DICOMDIR root that decides about it
    named: dict[str, Member] = {m.key: m for m in listed}
    for directory in sorted(directories, key=lambda m: m.name.count("/")):
        root = directory.key.rsplit("/", 1)[0] + "/" if "/" in directory.key else ""
        if any(root.startswith(r) for r in claimed.values()):
            continue
        file_ids = _read_dicomdir(directory, f"{label}{sep}{directory.name}", notes)
        present = [named[root + fid] for fid in file_ids if root + fid in named]
        if not present:
            continue
        for fid in file_ids:
            if root + fid not in named:
                skipped.append((f"{label}{sep}{root}{fid}", "named in the DICOMDIR but missing"))
        for member in present:
            claimed[member.key] = root
            yield _candidate(label, sep, member)
        for member in listed:
            if member.key.startswith(root) and member.key not in claimed:
                claimed[member.key] = root
                if member is not directory:
                    skipped.append(
                        (f"{label}{sep}{member.name}", _kind(member.name) or "not named in the DICOMDIR")
                    )
    for member in listed:
        if member.key not in claimed and not _is_dicomdir(member):
            yield from _scanned(label, sep, member, skipped, notes, nested=nested)


def _is_dicomdir(member: Member) -> bool:
    return member.key.rsplit("/", 1)[-1] == "DICOMDIR"


def _candidate(label: str, sep: str, member: Member) -> Candidate:
    return Candidate(f"{label}{sep}{member.name}", member.size, member.opener)


def _scanned(
    label: str, sep: str, member: Member, skipped: Skipped, notes: list[str], *, nested: bool
) -> Iterator[Candidate]:
    name = f"{label}{sep}{member.name}"
    lower = member.name.lower()
    if lower.endswith(".zip") or lower.endswith(".iso"):
        if nested:
            skipped.append((name, "archive nested more than one level deep"))
            return
        yield from _nested(name, member, skipped, notes)
        return
    kind = _kind(member.name)
    if kind is not None and not _member_looks_like_dicom(member):
        skipped.append((name, kind))
        return
    yield _candidate(label, sep, member)


def _nested(name: str, member: Member, skipped: Skipped, notes: list[str]) -> Iterator[Candidate]:
    if member.name.lower().endswith(".iso"):
        if member.path is None:
            skipped.append((name, "ISO image inside an archive (copy it out and import it on its own)"))
            return
        yield from _medium(name, "!", iso_members(member.path, skipped), skipped, notes, nested=True)
        return
    source = member.path if member.path is not None else _seekable(member, name, skipped)
    if source is None:
        return
    yield from _medium(
        name, "!", zip_members(source, name, skipped, member.size), skipped, notes, nested=True
    )


def _seekable(member: Member, name: str, skipped: Skipped) -> io.BufferedIOBase | None:
    try:
        stream = member.opener().__enter__()
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        skipped.append((name, f"unreadable: {exc}"))
        return None
    return stream  # type: ignore[return-value]  # zip members and ISO files seek (slowly if deflated)


def _member_looks_like_dicom(member: Member) -> bool:
    try:
        with member.opener() as stream:
            return looks_like_dicom(stream.read(132))
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def _kind(name: str) -> str | None:
    """``not a DICOM file: <kind> (<extension>)`` for what discs carry besides images."""
    base = PurePosixPath(name).name.lower()
    if base in AUTORUN:
        return f"{NOT_DICOM}: autorun or system file ({base})"
    suffix = PurePosixPath(base).suffix
    for kind, suffixes in KINDS.items():
        if suffix in suffixes:
            return f"{NOT_DICOM}: {kind} ({suffix})"
    return None


def skip_kind(reason: str) -> str:
    """The kind a skip reason belongs to, for a summary by reason."""
    if reason.startswith(f"{NOT_DICOM}:"):
        return reason.rsplit(" (", 1)[0]
    return reason.split(":", 1)[0].split(" (", 1)[0]


def _read_dicomdir(member: Member, label: str, notes: list[str]) -> list[str]:
    """The File IDs a DICOMDIR names (``/``-joined, upper case), or [] with a note."""
    try:
        if member.size > MAX_DICOMDIR_BYTES:
            raise ValueError(f"{member.size} bytes is too large for a DICOMDIR")
        file_ids = _through_fileset(member.path) if member.path else _through_records(member)
    except Exception as exc:  # pydicom raises many types on damaged input
        notes.append(
            f"{label}: unreadable DICOMDIR ({type(exc).__name__}: {exc}); scanning its folder instead"
        )
        return []
    if not file_ids:
        notes.append(f"{label}: the DICOMDIR names no file; scanning its folder instead")
    return file_ids


def _through_fileset(path: Path) -> list[str]:
    """pydicom's FileSet walks the record tree and keeps the files that exist; the records
    themselves give the names it dropped (missing, or not matching in case). FileSet costs about
    1.3 ms a record (13 s for 10 000 here), so a larger DICOMDIR is read from its records alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        named = _file_ids(ds)
        found: list[str] = []
        if len(ds.get("DirectoryRecordSequence", [])) <= FILESET_RECORDS:
            file_set = FileSet()
            try:
                file_set.load(ds)
                root = file_set.root_path
                found = [Path(i.path).relative_to(root).as_posix().upper() for i in file_set]
            except Exception:  # a tree FileSet rejects (orphans, bad offsets): the records still name files
                found = []
            finally:
                _drop_staging(file_set)
    seen = set(found)
    return found + [fid for fid in named if fid not in seen]


def _drop_staging(file_set: FileSet) -> None:
    """FileSet makes an (empty) staging folder for writing, which reading never uses: remove it
    now rather than whenever the object is collected."""
    staging = getattr(file_set, "_stage", {}).get("tmpdir")
    if staging is not None:
        staging.cleanup()


def _through_records(member: Member) -> list[str]:
    with member.opener() as stream, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(stream.read()))
    return _file_ids(ds)


def _file_ids(ds: Dataset) -> list[str]:
    """Referenced File IDs of every record in use (PS3.3 §F.3.2.2), in record order."""
    if ds.file_meta.get("MediaStorageSOPClassUID") != "1.2.840.10008.1.3.10":
        raise ValueError("not a Media Storage Directory (DICOMDIR) object")
    out: list[str] = []
    for record in ds.get("DirectoryRecordSequence", []):
        if record.get("RecordInUseFlag", 0xFFFF) == 0 or "ReferencedFileID" not in record:
            continue
        value = record.ReferencedFileID
        parts = [str(value)] if isinstance(value, str) else [str(v) for v in value]
        file_id = "/".join(p.strip().upper() for p in parts)
        if unsafe_name(file_id) is None and file_id not in out:
            out.append(file_id)
    return out
