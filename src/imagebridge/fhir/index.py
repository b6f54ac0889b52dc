"""Reads of the archive index shaped for FHIR: patients with their logical ids, studies with series and instances.

A patient's FHIR logical id is a digest of (PatientID, IssuerOfPatientID): stable across
restarts and re-imports, never reused for another person, and not an MRN in a URL. The ids are
kept in ``fhir_patient_ids`` so that a search by id is an index lookup; patients filed since
the last read get theirs on the next read.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, func, insert, select, true
from sqlalchemy.exc import IntegrityError

from imagebridge.auth.tokens import aware
from imagebridge.index.schema import fhir_patient_ids, instances, patients, series, studies


def fhir_id(patient_id: str, issuer: str) -> str:
    return hashlib.sha256(f"{issuer}\x00{patient_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PatientRow:
    fhir_id: str
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class InstanceRow:
    uid: str
    number: int | None
    sop_class: str


@dataclass
class SeriesRow:
    uid: str
    number: int | None
    modality: str
    description: str
    num_instances: int
    instances: list[InstanceRow] = field(default_factory=list)


@dataclass
class StudyRow:
    uid: str
    patient: PatientRow
    date: str
    time: str
    description: str
    accession: str
    modalities: list[str]
    num_series: int
    num_instances: int
    updated_at: datetime
    attrs: str
    series: list[SeriesRow] = field(default_factory=list)


_JOIN = and_(
    patients.c.patient_id == fhir_patient_ids.c.patient_id, patients.c.issuer == fhir_patient_ids.c.issuer
)


class FhirIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def assign_ids(self) -> None:
        """Give every patient without one its logical id (idempotent; races settle on the unique key)."""
        missing = select(patients.c.patient_id, patients.c.issuer).where(~exists().where(_JOIN))
        with self.engine.connect() as conn:
            rows = conn.execute(missing).all()
        for row in rows:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(fhir_patient_ids).values(
                            fhir_id=fhir_id(row.patient_id, row.issuer),
                            patient_id=row.patient_id,
                            issuer=row.issuer,
                        )
                    )
            except IntegrityError:
                continue

    def patients(self, where: Sequence[ColumnElement[bool]]) -> list[PatientRow]:
        self.assign_ids()
        query = _patient_select().where(*where).order_by(patients.c.pk)
        with self.engine.connect() as conn:
            return [_patient(r) for r in conn.execute(query).all()]

    def studies(self, where: Sequence[ColumnElement[bool]], limit: int | None = None) -> list[StudyRow]:
        """Studies matching ``where`` (columns of studies, patients, fhir_patient_ids), with their
        detail, newest first; the first ``limit`` only, if given."""
        self.assign_ids()
        query = (
            select(studies, *_patient_select().selected_columns, studies.c.attrs.label("study_attrs"))
            .select_from(_STUDY_JOIN)
            .where(*where)
            .order_by(studies.c.study_date.desc(), studies.c.study_time.desc(), studies.c.pk)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            found = {r.pk: _study(r) for r in rows}
            if found:
                _attach_series(conn, found)
        return list(found.values())

    def count_studies(self, where: Sequence[ColumnElement[bool]]) -> int:
        """How many studies :meth:`studies` would return without a limit."""
        self.assign_ids()
        query = select(func.count()).select_from(_STUDY_JOIN).where(*where)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def patients_with_studies(
        self, where: Sequence[ColumnElement[bool]], limit: int
    ) -> tuple[list[tuple[PatientRow, int]], int]:
        """The patients of the studies matching ``where``, each with how many of them, by name (the
        first ``limit``); and how many patients there are in all."""
        self.assign_ids()
        person = _patient_select().selected_columns
        query = (
            select(*person, func.count().label("study_count"))
            .select_from(_STUDY_JOIN)
            .where(*where)
            .group_by(*person)
            .order_by(patients.c.name, fhir_patient_ids.c.fhir_id)
            .limit(limit)
        )
        total = (
            select(func.count(func.distinct(fhir_patient_ids.c.fhir_id)))
            .select_from(_STUDY_JOIN)
            .where(*where)
        )
        with self.engine.connect() as conn:
            found = [(_patient(r), int(r.study_count)) for r in conn.execute(query).all()]
            return found, int(conn.execute(total).scalar_one())


_STUDY_JOIN = studies.join(patients, studies.c.patient_pk == patients.c.pk).join(fhir_patient_ids, _JOIN)


def _patient_select() -> Any:
    return select(
        fhir_patient_ids.c.fhir_id,
        patients.c.patient_id,
        patients.c.issuer,
        patients.c.name,
        patients.c.birth_date,
        patients.c.sex,
    ).select_from(patients.join(fhir_patient_ids, _JOIN))


def _patient(row: Any) -> PatientRow:
    return PatientRow(row.fhir_id, row.patient_id, row.issuer, row.name, row.birth_date, row.sex)


def _study(row: Any) -> StudyRow:
    return StudyRow(
        uid=row.study_uid,
        patient=_patient(row),
        date=row.study_date,
        time=row.study_time,
        description=row.description,
        accession=row.accession_number,
        modalities=[m for m in row.modalities.split("\\") if m],
        num_series=row.num_series,
        num_instances=row.num_instances,
        updated_at=aware(row.updated_at),
        attrs=row.study_attrs,
    )


def _attach_series(conn: Connection, found: dict[int, StudyRow]) -> None:
    series_rows = conn.execute(
        select(series).where(series.c.study_pk.in_(found)).order_by(series.c.series_number, series.c.pk)
    ).all()
    by_pk: dict[int, SeriesRow] = {}
    for r in series_rows:
        entry = SeriesRow(r.series_uid, r.series_number, r.modality, r.description, r.num_instances)
        by_pk[r.pk] = entry
        found[r.study_pk].series.append(entry)
    if not by_pk:
        return
    grouped: dict[int, list[InstanceRow]] = defaultdict(list)
    query = (
        select(
            instances.c.series_pk, instances.c.sop_uid, instances.c.instance_number, instances.c.sop_class_uid
        )
        .where(instances.c.series_pk.in_(by_pk), true())
        .order_by(instances.c.instance_number, instances.c.pk)
    )
    for r in conn.execute(query).all():
        grouped[r.series_pk].append(InstanceRow(r.sop_uid, r.instance_number, r.sop_class_uid))
    for pk, entry in by_pk.items():
        entry.instances = grouped[pk]
