"""Read a received Part 10 file once and derive everything the index needs.

Strict on write, tolerant on read (highdicom's habit): an instance is refused
only when it is not DICOM or lacks the UIDs that place it in the hierarchy;
cosmetic faults are logged and kept exactly as received.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from imagebridge.dicom import dicomjson, frames, lean, syntaxes, tags
from imagebridge.errors import MissingAttribute, NotDicom

log = logging.getLogger(__name__)

DEFER_SIZE = 64 * 1024


@dataclass(frozen=True)
class ParsedInstance:
    """The facts of one instance that the index stores, all as plain values."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    referring_physician: str
    study_id: str
    modality: str
    series_number: int | None
    series_description: str
    performed_start_date: str
    performed_start_time: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    metadata_json: str
    frame_index: frames.FrameIndex | None
    metadata: dict[str, Any] = field(compare=False, repr=False)

    # The attributes of each level as DICOM JSON, made only when a patient, study or series row
    # is created (once per series, not once per instance).
    @functools.cached_property
    def patient_json(self) -> str:
        return _subset(self.metadata, tags.PATIENT_TAGS)

    @functools.cached_property
    def study_json(self) -> str:
        return _subset(self.metadata, tags.STUDY_TAGS)

    @functools.cached_property
    def series_json(self) -> str:
        return _subset(self.metadata, tags.SERIES_TAGS)


def parse_file(
    path: Path, *, bulk_threshold: int = 1024, head: bytes | None = None, size: int | None = None
) -> ParsedInstance:
    """Parse the Part 10 file at ``path``; raises NotDicom or MissingAttribute.

    The lean walk reads the common file (explicit VR little endian, nothing unusual); pydicom
    reads every other one, and any file the lean reading leaves in doubt. ``head`` and ``size``
    (the file's first bytes and its length, when the caller still has them) save the lean walk
    from reading the file."""
    walked = lean.walk(path, DEFER_SIZE, bulk_threshold, head, size)
    try:
        parsed = _from_walk(walked, path) if walked is not None else None
    except _NotPlain:
        parsed = None
    return parsed if parsed is not None else parse_with_pydicom(path, bulk_threshold=bulk_threshold)


def _from_walk(walked: lean.Walked, path: Path) -> ParsedInstance | None:
    """The instance from the lean walk; None where the pydicom path must decide (a missing UID,
    a value the index reads that is not plain)."""
    metadata = walked.metadata
    values = _WalkedValues(walked)
    study_uid, series_uid, sop_uid = (
        values.text(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    )
    sop_class = values.text("SOPClassUID") or walked.media_sop_class_uid
    if (
        not (study_uid and series_uid and sop_uid and sop_class)
        or max(map(len, (study_uid, series_uid, sop_uid))) > 64
    ):
        return None
    base = f"{dicomjson.BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/"
    walked.name_bulk_data(lambda p: base + p)
    has_pixels = any(
        _json_key(k) in metadata for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    )
    count = (values.int("NumberOfFrames") or 1) if has_pixels else None
    frame_index = _walked_frame_index(walked, values, path, count)
    return _instance(
        values,
        (study_uid, series_uid, sop_uid),
        sop_class,
        walked.transfer_syntax,
        count,
        metadata,
        frame_index,
    )


class _NotPlain(Exception):
    """A value the index reads is not a plain string or number in the walked metadata."""


class _WalkedValues:
    """Attribute values for the index from the walked metadata (as :class:`_Values` gives them)."""

    def __init__(self, walked: lean.Walked) -> None:
        self.metadata, self.person_names = walked.metadata, walked.person_names

    def _plain(self, keyword: str) -> list[Any] | None:
        key = _json_key(keyword)
        element = self.metadata.get(key)
        if element is None:
            return None
        if key in self.person_names:
            return self.person_names[key]
        value = element.get("Value", [])
        if (
            "BulkDataURI" in element
            or "InlineBinary" in element
            or not all(isinstance(v, str | int | float) for v in value)
        ):
            raise _NotPlain(keyword)
        return value

    def text(self, keyword: str) -> str:
        value = self._plain(keyword)
        return _joined(value) if value else ""

    def int(self, keyword: str) -> int | None:
        value = self._plain(keyword)
        try:
            return int(value[0]) if value and len(value) == 1 and value[0] != "" else None
        except (TypeError, ValueError):
            return None


def _walked_frame_index(
    walked: lean.Walked, values: _WalkedValues, path: Path, count: int | None
) -> frames.FrameIndex | None:
    if walked.pixel is None or count is None:
        return None
    offset, length = walked.pixel
    return _locate_frames(path, offset, length, count, values.int, walked.fragments)


def _locate_frames(
    path: Path,
    offset: int,
    length: int,
    count: int,
    number: Callable[[str], int | None],
    fragments: list[frames.Fragment] | None = None,
) -> frames.FrameIndex | None:
    """The frame index of the pixel data value at ``offset`` (both parse paths): native frames
    from the image size (``number`` reads Rows, Columns, ...), encapsulated ones from the items,
    walked here unless the lean walk already passed them (``fragments``)."""
    try:
        if length == 0xFFFFFFFF:
            with path.open("rb") as fp:
                if fragments is None:
                    return frames.encapsulated_index(fp, offset, count)
                return frames.index_of_items(fp, fragments, count)
        bits = number("BitsAllocated") or 0
        if bits % 8:
            return None
        size = (number("Rows") or 0) * (number("Columns") or 0) * (number("SamplesPerPixel") or 1)
        return frames.native_index(offset, length, size * bits // 8, count)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("frame offsets of %s not computed: %s", path.name, exc)
        return None


def parse_with_pydicom(path: Path, *, bulk_threshold: int = 1024) -> ParsedInstance:
    """Parse with pydicom, which reads every kind of file (and the reference the lean walk is
    tested against)."""
    ds = _read(path)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    study_uid, series_uid, sop_uid = _uids(ds)
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if not sop_class:
        raise MissingAttribute("SOP Class UID (0008,0016) is missing")
    base = f"{dicomjson.BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/"
    frame_index = _frame_index(ds, path, syntax)  # before the JSON walk converts the raw element
    metadata = dicomjson.dataset_to_json(ds, lambda p: base + p, bulk_threshold)
    return _instance(
        _Values(ds, metadata),
        (study_uid, series_uid, sop_uid),
        sop_class,
        syntax,
        _frame_count(ds),
        metadata,
        frame_index,
    )


class _Readable(Protocol):
    def text(self, keyword: str) -> str: ...

    def int(self, keyword: str) -> int | None: ...


def _instance(
    values: _Readable,
    uids: tuple[str, str, str],
    sop_class: str,
    syntax: str,
    number_of_frames: int | None,
    metadata: dict[str, Any],
    frame_index: frames.FrameIndex | None,
) -> ParsedInstance:
    """The instance with the attributes the index reads, whichever path read the file."""
    study_uid, series_uid, sop_uid = uids
    return ParsedInstance(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax=syntax,
        patient_id=values.text("PatientID"),
        issuer_of_patient_id=values.text("IssuerOfPatientID"),
        patient_name=values.text("PatientName"),
        patient_birth_date=values.text("PatientBirthDate"),
        patient_sex=values.text("PatientSex"),
        study_date=values.text("StudyDate"),
        study_time=values.text("StudyTime"),
        accession_number=values.text("AccessionNumber"),
        study_description=values.text("StudyDescription"),
        referring_physician=values.text("ReferringPhysicianName"),
        study_id=values.text("StudyID"),
        modality=values.text("Modality"),
        series_number=values.int("SeriesNumber"),
        series_description=values.text("SeriesDescription"),
        performed_start_date=values.text("PerformedProcedureStepStartDate"),
        performed_start_time=values.text("PerformedProcedureStepStartTime"),
        instance_number=values.int("InstanceNumber"),
        rows=values.int("Rows"),
        columns=values.int("Columns"),
        number_of_frames=number_of_frames,
        metadata_json=json.dumps(metadata, separators=(",", ":"), ensure_ascii=False),
        frame_index=frame_index,
        metadata=metadata,
    )


def _read(path: Path) -> Dataset:
    try:
        ds = read_stored(path, defer_size=DEFER_SIZE)
    except InvalidDicomError as exc:
        raise NotDicom(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on damaged input
        raise NotDicom(f"unreadable DICOM data: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise NotDicom("the File Meta Information has no Transfer Syntax UID (0002,0010)")
    return ds


def read_stored(path: Path, **options: Any) -> Dataset:
    """Read a stored instance with pydicom, whichever form it was received in (with or without
    preamble). Every reader of stored files goes through here."""
    return pydicom.dcmread(path, force=_meta_without_preamble(path), **options)


def _meta_without_preamble(path: Path) -> bool:
    with path.open("rb") as fp:
        return lean.starts_with_file_meta(fp.read(8))


def _uids(ds: Dataset) -> tuple[str, str, str]:
    values = []
    for keyword, tag in (
        ("StudyInstanceUID", "(0020,000D)"),
        ("SeriesInstanceUID", "(0020,000E)"),
        ("SOPInstanceUID", "(0008,0018)"),
    ):
        value = _text(ds, keyword)
        if not value:
            raise MissingAttribute(f"{keyword} {tag} is missing or empty")
        if len(value) > 64:
            raise MissingAttribute(f"{keyword} {tag} is longer than 64 characters")
        values.append(value)
    return values[0], values[1], values[2]


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:
        log.warning("%s unreadable: %s", keyword, exc)
        return ""
    if value is None:
        return ""
    return _joined(list(value) if isinstance(value, pydicom.multival.MultiValue) else [value])


def _joined(values: list[Any]) -> str:
    """The index's text of an attribute: several values joined by a backslash as they are, one
    value stripped of padding."""
    if len(values) > 1:
        return "\\".join(str(v) for v in values)
    return str(values[0]).strip().rstrip("\x00") if values else ""


class _Values:
    """Attribute values for the index, read from the DICOM JSON just made where it holds them
    as plain strings or numbers (no second conversion by pydicom), else from the dataset."""

    def __init__(self, ds: Dataset, metadata: dict[str, Any]) -> None:
        self.ds, self.metadata = ds, metadata

    def _plain(self, keyword: str) -> list[Any] | None:
        element = self.metadata.get(_json_key(keyword))
        if element is None or "BulkDataURI" in element or "InlineBinary" in element:
            return None
        value = element.get("Value", [])
        return value if all(isinstance(v, str | int | float) for v in value) else None

    def text(self, keyword: str) -> str:
        value = self._plain(keyword)
        return _text(self.ds, keyword) if value is None else _joined(value)

    def int(self, keyword: str) -> int | None:
        value = self._plain(keyword)
        if value is None:
            return _int(self.ds, keyword)
        try:
            return int(value[0]) if len(value) == 1 and value[0] != "" else None
        except (TypeError, ValueError):
            return None


@functools.cache
def _json_key(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _frame_count(ds: Dataset) -> int | None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    return _int(ds, "NumberOfFrames") or 1


@functools.cache
def _keys(wanted: tuple[int, ...]) -> frozenset[str]:
    return frozenset(tags.tag_key(t) for t in wanted)


def _subset(metadata: dict[str, Any], wanted: tuple[int, ...]) -> str:
    keys = _keys(wanted)
    return json.dumps({k: v for k, v in metadata.items() if k in keys}, separators=(",", ":"))


def _frame_index(ds: Dataset, path: Path, syntax: str) -> frames.FrameIndex | None:
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    count = _frame_count(ds)
    if raw is None or count is None or syntaxes.is_deflated(syntax):
        return None
    if not isinstance(raw, RawDataElement):
        # Already converted to a DataElement: locate the value through a deferred re-read.
        ds = read_stored(path, defer_size=1)
        raw = ds.get_item(0x7FE00010, keep_deferred=True)
        if not isinstance(raw, RawDataElement):
            return None
    if raw.length != 0xFFFFFFFF and syntax == "1.2.840.10008.1.2.2":
        return None  # big endian: frames are served after byte swapping
    return _locate_frames(path, raw.value_tell, raw.length, count, lambda keyword: _int(ds, keyword))
