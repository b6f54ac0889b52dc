"""IHE PDI (Portable Data for Imaging, RAD TF-1 §15) file sets of archived studies.

Layout (PS3.10 §8, PS3.11 General Purpose profiles)::

    DICOMDIR                                   PATIENT / STUDY / SERIES / leaf records
    README.TXT                                 what is on the medium and who wrote it
    INDEX.HTM                                  the patients and studies, for a web browser
    DICOM/PA000001/ST000001/SE000001/IM000001  each instance, byte-identical to its stored blob

File IDs are at most 8 characters of A-Z, 0-9 (PS3.10 §8.5), 5 levels deep, so the same names are
valid ISO 9660 level 1 names. :func:`plan` reads only the headers of the stored files; the zip is
laid out from sizes alone and streamed later in any byte range (:class:`FileSetPlan`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.fileset import DIRECTORY_RECORDERS
from pydicom.fileset import _four_level_record_type as four_level_record_type
from pydicom.uid import generate_uid
from sqlalchemy import select

from imagebridge.dicom.parse import read_stored
from imagebridge.errors import InvalidInput, NotFound
from imagebridge.index import schema
from imagebridge.index.lookup import StoredInstance, Target
from imagebridge.media import dicomdir, pages
from imagebridge.media.zipstream import Entry, ZipLayout
from imagebridge.services.archive import Archive

PREAMBLE = b"\x00" * 128 + b"DICM"


@dataclass
class SeriesOnMedia:
    header: Dataset
    file_ids: list[str] = field(default_factory=list)


@dataclass
class StudyOnMedia:
    header: Dataset
    series: dict[str, SeriesOnMedia] = field(default_factory=dict)

    @property
    def instance_count(self) -> int:
        return sum(len(s.file_ids) for s in self.series.values())


@dataclass
class PatientOnMedia:
    header: Dataset
    studies: dict[str, StudyOnMedia] = field(default_factory=dict)


class FileSetPlan:
    """A PDI file set laid out: ``size`` of its zip, an ``etag`` that changes with its content,
    a suggested ``filename``; the zip streams with flat memory from the stored blobs."""

    def __init__(self, entries: list[Entry], title: str, patients: list[PatientOnMedia]) -> None:
        self.entries = entries
        self.title = title
        self.patients = patients
        self._layout = ZipLayout(entries)
        self.size = self._layout.size
        digest = hashlib.sha256(b"pdi-zip-1\0")
        for entry in entries:
            content = hashlib.sha256(entry.data).hexdigest() if entry.data is not None else _blob_key(entry)
            digest.update(f"{entry.name}\0{entry.size}\0{len(entry.prefix)}\0{content}\0".encode())
        self.etag = digest.hexdigest()[:32]
        self.filename = f"{_slug(title)}.zip"

    def iter_zip(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the zip (``end`` exclusive, None: to the end); the same plan
        gives the same bytes for every range, so ranges concatenated are the whole archive."""
        return self._layout.iter_bytes(start, end)

    def write_directory(self, out: Path) -> None:
        """The file set as plain files under ``out`` (created; existing files are replaced)."""
        out.mkdir(parents=True, exist_ok=True)
        for entry in self.entries:
            target = out.joinpath(*entry.name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_entry(entry, target)

    @property
    def instance_count(self) -> int:
        return sum(s.instance_count for p in self.patients for s in p.studies.values())


def plan(archive: Archive, study_uids: list[str], *, title: str | None = None) -> FileSetPlan:
    """Lay out a PDI file set holding every instance of ``study_uids`` (NotFound if one is unknown)."""
    if not study_uids:
        raise InvalidInput("name at least one study to export")
    builder = _Builder(archive)
    for study_uid in dict.fromkeys(study_uids):
        builder.add_study(study_uid)
    patients = list(builder.patients.values())
    title = title or _default_title(patients)
    seed = hashlib.sha256("\0".join(e.name + ":" + _blob_key(e) for e in builder.entries).encode())
    directory = dicomdir.encode(
        _file_set_id(title), builder.roots, generate_uid(entropy_srcs=[seed.hexdigest()])
    )
    front = [
        Entry("DICOMDIR", len(directory), data=directory),
        _text_entry("README.TXT", pages.readme(title, patients)),
        _text_entry("INDEX.HTM", pages.index_html(title, patients)),
    ]
    return FileSetPlan(front + builder.entries, title, patients)


class _Builder:
    """Walks the studies' stored instances into directory records and zip entries."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.patients: dict[tuple[str, str], PatientOnMedia] = {}
        self.roots: list[dicomdir.Record] = []
        self.entries: list[Entry] = []
        self._records: dict[tuple[str, ...], dicomdir.Record] = {}
        self._keys: dict[int, str] = {}

    def add_study(self, study_uid: str) -> None:
        key = self.archive.lookup.patient_of(study_uid)
        if key is None:
            raise NotFound(f"study {study_uid} is not in the archive")
        numbers = _instance_numbers(self.archive, study_uid)
        for stored in self.archive.lookup.instances(Target(study_uid)):
            self._add_instance(key, stored, numbers.get(stored.sop_uid))

    def _add_instance(self, patient_key: tuple[str, str], stored: StoredInstance, number: int | None) -> None:
        path = self.archive.blobs.path(stored.blob_key)
        if path is None:
            raise InvalidInput("media export needs a blob store with local files")
        known = self.patients.get(patient_key)
        study = known.studies.get(stored.study_uid) if known else None
        series = study.series.get(stored.series_uid) if study else None
        ds = _image_header(series.header, stored, number) if series else None
        if ds is None:  # the first instance of a series, or not an image: its own header
            ds = read_stored(path, stop_before_pixels=True)
            _complete(ds, stored)
        patient = self._patient(patient_key, ds)
        study = self._study(patient, ds, stored)
        series = self._series(study, ds, stored)
        file_id = [
            "DICOM",
            f"PA{_ordinal(self.patients, patient_key)}",
            f"ST{_ordinal(patient.studies, stored.study_uid)}",
            f"SE{_ordinal(study.series, stored.series_uid)}",
            f"IM{len(series.file_ids) + 1:06d}",
        ]
        series.file_ids.append("/".join(file_id))
        leaf = _leaf_record(ds, stored, file_id)
        self._records[(stored.study_uid, stored.series_uid)].children.append(leaf)
        with path.open("rb") as fp:
            prefix = b"" if fp.read(132)[128:] == b"DICM" else PREAMBLE
            size = os.fstat(fp.fileno()).st_size
        entry = Entry(
            "/".join(file_id),
            len(prefix) + size,
            opener=functools.partial(self.archive.blobs.open, stored.blob_key),
            prefix=prefix,
            path=path,
        )
        self.entries.append(entry)

    def _patient(self, key: tuple[str, str], ds: Dataset) -> PatientOnMedia:
        if key not in self.patients:
            self.patients[key] = PatientOnMedia(ds)
            record = _record("PATIENT", ds)
            self._records[("patient", *key)] = record
            self.roots.append(record)
        return self.patients[key]

    def _study(self, patient: PatientOnMedia, ds: Dataset, stored: StoredInstance) -> StudyOnMedia:
        if stored.study_uid not in patient.studies:
            patient.studies[stored.study_uid] = StudyOnMedia(ds)
            record = _record("STUDY", ds)
            self._records[(stored.study_uid,)] = record
            parent = next(k for k, p in self.patients.items() if p is patient)
            self._records[("patient", *parent)].children.append(record)
        return patient.studies[stored.study_uid]

    def _series(self, study: StudyOnMedia, ds: Dataset, stored: StoredInstance) -> SeriesOnMedia:
        if stored.series_uid not in study.series:
            study.series[stored.series_uid] = SeriesOnMedia(ds)
            record = _record("SERIES", ds)
            self._records[(stored.study_uid, stored.series_uid)] = record
            self._records[(stored.study_uid,)].children.append(record)
        return study.series[stored.series_uid]


def _instance_numbers(archive: Archive, study_uid: str) -> dict[str, int]:
    query = (
        select(schema.instances.c.sop_uid, schema.instances.c.instance_number)
        .join(schema.series, schema.instances.c.series_pk == schema.series.c.pk)
        .join(schema.studies, schema.series.c.study_pk == schema.studies.c.pk)
        .where(schema.studies.c.study_uid == study_uid)
    )
    with archive.engine.connect() as conn:
        return {
            row.sop_uid: row.instance_number for row in conn.execute(query) if row.instance_number is not None
        }


def _image_header(series_header: Dataset, stored: StoredInstance, number: int | None) -> Dataset | None:
    """What an IMAGE record needs, from the index alone, for a further instance of a series whose
    first header was read; None when the instance would not get an IMAGE record (SR, PR, KO...)."""
    ds = Dataset()
    ds.SOPClassUID = stored.sop_class_uid
    ds.Modality = series_header.get("Modality") or "OT"
    if four_level_record_type(ds) != "IMAGE":
        return None
    ds.SOPInstanceUID = stored.sop_uid
    ds.InstanceNumber = number if number is not None else 1
    return ds


def _complete(ds: Dataset, stored: StoredInstance) -> None:
    """Give the header the Type 1 keys of PS3.3 §F.5 that records need, from the index or a
    neutral value, when the stored object lacks them (tolerant on read, strict on write)."""
    defaults: dict[str, object] = {
        "SOPClassUID": stored.sop_class_uid,
        "SOPInstanceUID": stored.sop_uid,
        "StudyInstanceUID": stored.study_uid,
        "SeriesInstanceUID": stored.series_uid,
        "PatientID": "UNKNOWN",
        "StudyDate": "",
        "StudyTime": "",
        "StudyID": "1",
        "Modality": "OT",
        "SeriesNumber": 1,
        "InstanceNumber": 1,
    }
    for keyword, value in defaults.items():
        if keyword not in ds or ds[keyword].VM == 0:
            if keyword == "StudyDate":
                value = ds.get("SeriesDate") or ds.get("ContentDate") or "19000101"
            elif keyword == "StudyTime":
                value = ds.get("SeriesTime") or ds.get("ContentTime") or "000000"
            setattr(ds, keyword, value)


def _record(record_type: str, ds: Dataset) -> dicomdir.Record:
    record = DIRECTORY_RECORDERS[record_type](ds)
    record.DirectoryRecordType = record_type
    if "SpecificCharacterSet" in ds:
        record.SpecificCharacterSet = ds.SpecificCharacterSet
    return dicomdir.Record(record)


def _leaf_record(ds: Dataset, stored: StoredInstance, file_id: list[str]) -> dicomdir.Record:
    record_type = four_level_record_type(ds)
    try:
        leaf = _record(record_type, ds)
    except ValueError as exc:
        raise InvalidInput(
            f"instance {stored.sop_uid} cannot be described in a DICOMDIR {record_type} record: {exc}"
        ) from exc
    _document_keys(leaf.ds, ds)
    leaf.ds.ReferencedFileID = file_id
    leaf.ds.ReferencedSOPClassUIDInFile = stored.sop_class_uid
    leaf.ds.ReferencedSOPInstanceUIDInFile = stored.sop_uid
    leaf.ds.ReferencedTransferSyntaxUIDInFile = stored.transfer_syntax
    return leaf


def _document_keys(record: Dataset, ds: Dataset) -> None:
    """SR DOCUMENT and KEY OBJECT DOC records (PS3.3 §F.5.18, §F.5.23) carry only the content
    items that modify the root's concept name (HAS CONCEPT MOD), not the whole report as pydicom
    copies it; a verified report's record carries its latest Verification DateTime."""
    if "ContentSequence" in record:
        modifiers = [
            item for item in record.ContentSequence if item.get("RelationshipType") == "HAS CONCEPT MOD"
        ]
        if modifiers:
            record.ContentSequence = modifiers
        else:
            del record.ContentSequence
    if record.get("VerificationFlag") == "VERIFIED" and "VerificationDateTime" not in record:
        times = [
            str(o.VerificationDateTime)
            for o in ds.get("VerifyingObserverSequence", [])
            if o.get("VerificationDateTime")
        ]
        if times:
            record.VerificationDateTime = max(times)


def _ordinal(mapping: Mapping[Any, object], key: object) -> str:
    return f"{list(mapping).index(key) + 1:06d}"


def _blob_key(entry: Entry) -> str:
    return entry.path.stem if entry.path is not None else ""


def _text_entry(name: str, text: str) -> Entry:
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    return Entry(name, len(data), data=data)


def _default_title(patients: list[PatientOnMedia]) -> str:
    if len(patients) == 1:
        return f"Images of {pages.person_name(patients[0].header)}"
    return f"Images of {len(patients)} patients"


def _file_set_id(title: str) -> str:
    """PS3.10 §8.6: File-set ID is CS, at most 16 characters of A-Z, 0-9, space and underscore."""
    cleaned = re.sub(r"[^A-Z0-9_ ]", "", title.upper().replace("-", "_")).strip()
    return cleaned[:16].strip() or "IMAGEBRIDGE"


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-")[:60] or "imagebridge-export"


def copy_entry(entry: Entry, target: Path) -> None:
    """Write one entry to ``target`` (a plain copy when the blob needs no preamble)."""
    if entry.path is not None and not entry.prefix:
        shutil.copyfile(entry.path, target)
        return
    with target.open("wb") as fp:
        for data in entry.chunks():
            fp.write(data)


def is_file_id_component(value: str) -> bool:
    """PS3.10 §8.5: a File ID component is 1 to 8 characters of A-Z, 0-9 and underscore."""
    return re.fullmatch(r"[A-Z0-9_]{1,8}", value) is not None


def patient_studies(archive: Archive, patient_id: str, issuer: str | None = None) -> list[str]:
    """The Study Instance UIDs of a patient, oldest first; with several issuers for the same
    Patient ID, ``issuer`` must say which patient is meant (PS3.3 §C.7.1.1 identity is the pair)."""
    query = (
        select(schema.patients.c.issuer, schema.studies.c.study_uid)
        .join(schema.studies, schema.studies.c.patient_pk == schema.patients.c.pk)
        .where(schema.patients.c.patient_id == patient_id)
        .order_by(schema.studies.c.study_date, schema.studies.c.study_time, schema.studies.c.pk)
    )
    if issuer is not None:
        query = query.where(schema.patients.c.issuer == issuer)
    with archive.engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        raise NotFound(f"no study of patient {patient_id!r}" + (f" issued by {issuer!r}" if issuer else ""))
    issuers = sorted({row.issuer for row in rows})
    if len(issuers) > 1:
        named = ", ".join(repr(i) if i else "(no issuer)" for i in issuers)
        raise InvalidInput(f"Patient ID {patient_id!r} exists for several issuers ({named}); add --issuer")
    return [row.study_uid for row in rows]
