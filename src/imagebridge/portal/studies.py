"""What a principal may see, for the portal's pages: studies decided one by one by ``auth.policy``.

The portal never widens access: it lists the studies of the patients the principal reaches
(all patients for a clinician without a list) that the SQL of :func:`imagebridge.index.access.visible`
shows (restricted studies and a user's exclusions, as FHIR search does), then asks
:func:`imagebridge.auth.policy.decide` about each; one study is decided on the same facts as on
``/dicomweb`` (:func:`imagebridge.index.access.target`: owner, restriction, exclusions).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import ColumnElement, and_, or_

from imagebridge.auth import policy
from imagebridge.auth.policy import Principal
from imagebridge.dicom.matching import Level
from imagebridge.fhir.index import FhirIndex, PatientRow, StudyRow
from imagebridge.index import access
from imagebridge.index.lookup import Target as StoredTarget
from imagebridge.index.schema import fhir_patient_ids, patients, studies
from imagebridge.services.archive import Archive

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
"""Structured Report storage SOP classes (PS3.4 Annex B.5: Basic/Enhanced/Comprehensive SR, ...)."""


@dataclass(frozen=True)
class Report:
    title: str
    text: str


def visible(archive: Archive, principal: Principal, *, patient: str | None = None) -> list[StudyRow]:
    """The studies ``principal`` may read, newest first; only ``patient``'s if one is named."""
    rows = FhirIndex(archive.engine).studies(_where(archive, principal, patient))
    return [row for row in rows if policy.decide(principal, target(row)).allowed]


@dataclass(frozen=True)
class Listing:
    """The newest studies a principal may read (at most the limit asked for), and how many in all."""

    rows: list[StudyRow]
    total: int


def newest(archive: Archive, principal: Principal, limit: int, *, patient: str | None = None) -> Listing:
    """The first ``limit`` of :func:`visible`, read from the index as a page (the rest only
    counted, when there may be more), not every study the principal may read."""
    where = _where(archive, principal, patient)
    index = FhirIndex(archive.engine)
    rows = index.studies(where, limit=limit)
    total = len(rows) if len(rows) < limit else index.count_studies(where)
    return Listing([row for row in rows if policy.decide(principal, target(row)).allowed], total)


@dataclass(frozen=True)
class Person:
    patient: PatientRow
    studies: int
    """how many of her studies the principal may read"""


def people(
    archive: Archive, principal: Principal, limit: int, *, search: str = ""
) -> tuple[list[Person], int]:
    """The patients whose studies ``principal`` may read, by name, each with how many (the first
    ``limit``), and how many patients there are in all; with ``search``, only those whose name
    holds every word of it, or whose Patient ID starts with it (case-insensitive)."""
    where = _where(archive, principal, None)
    words = search.split()
    if words:
        by_name = and_(*(patients.c.name.icontains(word, autoescape=True) for word in words))
        where.append(or_(by_name, patients.c.patient_id.istartswith(search.strip(), autoescape=True)))
    found, total = FhirIndex(archive.engine).patients_with_studies(where, limit)
    return [Person(patient, count) for patient, count in found], total


def _where(archive: Archive, principal: Principal, patient: str | None) -> list[ColumnElement[bool]]:
    """The principal's studies (and only ``patient``'s, if named), as SQL: her patients, the
    studies a share names, and :func:`imagebridge.index.access.visible` (restrictions, exclusions)."""
    where: list[ColumnElement[bool]] = []
    if principal.user_patients is not None and principal.share is None:
        reach = set(principal.user_patients)
        if principal.patient:
            reach.add(principal.patient)
        where.append(fhir_patient_ids.c.fhir_id.in_(sorted(reach)))
    elif principal.patient and principal.share is None:
        where.append(fhir_patient_ids.c.fhir_id == principal.patient)
    if principal.studies is not None:
        where.append(studies.c.study_uid.in_(principal.studies))
    if patient:
        where.append(fhir_patient_ids.c.fhir_id == patient)
    where.append(access.visible(archive.engine, policy.reach(principal, "read"), Level.STUDY))
    return where


def target(row: StudyRow) -> policy.Target:
    return policy.Target("ImagingStudy", "read", patient=row.patient.fhir_id, study_uid=row.uid)


def find(archive: Archive, principal: Principal, study_uid: str) -> StudyRow | None:
    """One study if the principal may read it (audited through ``policy.check``), else None."""
    facts = access.target(archive.engine, "read", study_uid)
    if facts is None or not policy.check(principal, facts).allowed:
        return None
    rows = FhirIndex(archive.engine).studies([studies.c.study_uid == study_uid])
    return rows[0] if rows else None


def may_read(archive: Archive, principal: Principal, study_uid: str) -> bool:
    """Whether ``principal`` may read the study (one small query; not audited: the DICOMweb
    request that follows is)."""
    facts = access.target(archive.engine, "read", study_uid)
    return facts is not None and policy.decide(principal, facts).allowed


def report(archive: Archive, row: StudyRow) -> Report | None:
    """The text of the study's first structured report (an SR instance), if it has one."""
    for series in row.series:
        for instance in series.instances:
            if instance.sop_class.startswith(SR_PREFIX):
                dataset = _read(archive, row.uid, series.uid, instance.uid)
                if dataset is not None:
                    return Report(_title(dataset), sr_text(dataset))
    return None


def _read(archive: Archive, study: str, series: str, sop: str) -> Dataset | None:
    stored = archive.lookup.instances(StoredTarget(study, series, sop))
    if not stored:
        return None
    try:
        with archive.blobs.open(stored[0].blob_key) as fh:
            return dcmread(fh)
    except (InvalidDicomError, OSError, ValueError):
        return None


def _title(dataset: Dataset) -> str:
    concept = dataset.get("ConceptNameCodeSequence")
    if concept:
        return str(concept[0].get("CodeMeaning", "Report"))
    return "Report"


def sr_text(dataset: Dataset, depth: int = 0) -> str:
    """A readable outline of an SR content tree (PS3.3 C.17.3): "Heading: value" lines, indented."""
    lines: list[str] = []
    for item in dataset.get("ContentSequence", []):
        name = ""
        if item.get("ConceptNameCodeSequence"):
            name = str(item.ConceptNameCodeSequence[0].get("CodeMeaning", ""))
        value = _value(item)
        line = f"{name}: {value}" if name and value else name or value
        if line:
            lines.append("  " * depth + line)
        child = sr_text(item, depth + 1)
        if child:
            lines.append(child)
    return "\n".join(lines)


def _value(item: Dataset) -> str:
    kind = item.get("ValueType", "")
    if kind == "TEXT":
        return str(item.get("TextValue", ""))
    if kind == "CODE" and item.get("ConceptCodeSequence"):
        return str(item.ConceptCodeSequence[0].get("CodeMeaning", ""))
    if kind == "NUM" and item.get("MeasuredValueSequence"):
        measured = item.MeasuredValueSequence[0]
        units = measured.get("MeasurementUnitsCodeSequence")
        unit = str(units[0].get("CodeValue", "")) if units else ""
        return f"{measured.get('NumericValue', '')} {unit}".strip()
    if kind in ("PNAME", "DATE", "TIME", "DATETIME", "UIDREF"):
        for key in ("PersonName", "Date", "Time", "DateTime", "UID"):
            if key in item:
                return str(item.get(key))
    return ""


QUICK_LOOK_IMAGES = 60
FRAMES_PER_INSTANCE = 6


def quick_look_frames(archive: Archive, row: StudyRow, base: str) -> list[tuple[str, str]]:
    """(rendered-frame URL, caption) for a quick look: every image instance, and up to
    :data:`FRAMES_PER_INSTANCE` frames spread through a multi-frame one (a cine loop, a volume)."""
    stored = {i.sop_uid: i for i in archive.lookup.instances(StoredTarget(row.uid))}
    frames: list[tuple[str, str]] = []
    for series in row.series:
        for instance in series.instances:
            found = stored.get(instance.uid)
            if found is None or found.number_of_frames is None:
                continue
            path = f"{base}/studies/{row.uid}/series/{series.uid}/instances/{instance.uid}"
            label = " ".join(f"Series {series.number or ''} {series.description}".split())
            count = found.number_of_frames
            if count <= 1:
                frames.append((f"{path}/rendered", f"{label}, image {instance.number or 1}"))
                continue
            step = max(count // FRAMES_PER_INSTANCE, 1)
            for number in range(1, count + 1, step)[:FRAMES_PER_INSTANCE]:
                frames.append((f"{path}/frames/{number}/rendered", f"{label}, frame {number} of {count}"))
    return frames[:QUICK_LOOK_IMAGES]
