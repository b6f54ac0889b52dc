"""The reconciliation tables (revision 0007): sources, cases, patient links, imported instances,
outside studies; and the local patients that matching reads. SQLAlchemy Core, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from imagebridge.errors import Conflict, NotFound
from imagebridge.index.schema import (
    import_sources,
    imported_instances,
    outside_studies,
    patient_links,
    reconciliation_cases,
)
from imagebridge.reconcile.coerce import Identity
from imagebridge.reconcile.patients import LocalPatients

PENDING = "pending"
LINKED = "linked"
NEW_PATIENT = "new-patient"
DECIDING = "deciding"
QUARANTINED = "quarantined"
STORED = "stored"


@dataclass(frozen=True)
class Source:
    name: str
    issuer: str
    accession_prefix: str | None
    configured: bool = False
    """Named in the settings file (not removable from the command line)."""


@dataclass(frozen=True)
class Case:
    pk: int
    source: str
    study_uid: str
    source_patient_id: str
    source_issuer: str
    incoming: dict[str, Any]
    method: str
    score: float | None
    breakdown: list[dict[str, Any]]
    candidate: tuple[str, str] | None
    state: str
    patient: tuple[str, str] | None
    decided_by: str | None
    created_at: datetime
    decided_at: datetime | None

    def summary(self) -> str:
        """One line for people: the outcome, the patient and how it was decided."""
        scored = f", score {self.score:g}" if self.score is not None else ""
        how = f"{self.method}{scored}"
        if self.state in (PENDING, DECIDING):
            who = f" (suggested: {self.candidate[0]})" if self.candidate else ""
            return f"waiting for review, case {self.pk}{who}; {how}"
        assert self.patient is not None
        verb = "new patient" if self.state == NEW_PATIENT else "linked to"
        return f"{verb} {self.patient[0]} (issuer {self.patient[1] or 'none'}); {how}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "source": self.source,
            "study_uid": self.study_uid,
            "source_patient": {"patient_id": self.source_patient_id, "issuer": self.source_issuer},
            "incoming": self.incoming,
            "method": self.method,
            "score": self.score,
            "breakdown": self.breakdown,
            "candidate": _pair(self.candidate),
            "state": self.state,
            "patient": _pair(self.patient),
            "decided_by": self.decided_by,
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
        }


@dataclass(frozen=True)
class OutsideStudy:
    study_uid: str
    source: str
    imported_at: datetime


def _pair(pair: tuple[str, str] | None) -> dict[str, str] | None:
    return None if pair is None else {"patient_id": pair[0], "issuer": pair[1]}


def now() -> datetime:
    return datetime.now(UTC)


class Records:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.patients = LocalPatients(engine)

    # --- sources ---------------------------------------------------------------------------
    def sources(self) -> list[Source]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(import_sources).order_by(import_sources.c.name)).all()
        return [Source(r.name, r.issuer, r.accession_prefix) for r in rows]

    def add_source(self, source: Source) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(import_sources).values(
                        name=source.name,
                        issuer=source.issuer,
                        accession_prefix=source.accession_prefix,
                        created_at=now(),
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a source named '{source.name}' already exists") from exc

    def remove_source(self, name: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(delete(import_sources).where(import_sources.c.name == name)).rowcount:
                raise NotFound(f"no source named '{name}' in the index")

    # --- cases -----------------------------------------------------------------------------
    def case(self, pk: int) -> Case:
        with self.engine.connect() as conn:
            row = conn.execute(select(reconciliation_cases).where(reconciliation_cases.c.pk == pk)).first()
        if row is None:
            raise NotFound(f"no reconciliation case {pk}")
        return _case(row)

    def case_for(self, source: str, study_uid: str) -> Case | None:
        query = select(reconciliation_cases).where(
            reconciliation_cases.c.source == source, reconciliation_cases.c.study_uid == study_uid
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _case(row)

    def cases(self, state: str | None = PENDING, limit: int = 500) -> list[Case]:
        query = select(reconciliation_cases).order_by(reconciliation_cases.c.pk).limit(limit)
        if state is not None:
            query = query.where(reconciliation_cases.c.state == state)
        with self.engine.connect() as conn:
            return [_case(r) for r in conn.execute(query).all()]

    def open_case(self, values: dict[str, Any]) -> Case:
        """Insert a case; if a concurrent import of the same study won the race, theirs is returned."""
        try:
            with self.engine.begin() as conn:
                pk = conn.execute(
                    insert(reconciliation_cases)
                    .values(**values, created_at=now())
                    .returning(reconciliation_cases.c.pk)
                ).scalar_one()
        except IntegrityError:
            existing = self.case_for(values["source"], values["study_uid"])
            if existing is None:
                raise
            return existing
        return self.case(int(pk))

    def claim(self, pk: int) -> Case:
        """Move a pending case to 'deciding' so that one reviewer decides it; Conflict otherwise."""
        case = self.case(pk)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(reconciliation_cases)
                .where(reconciliation_cases.c.pk == pk, reconciliation_cases.c.state == PENDING)
                .values(state=DECIDING)
            ).rowcount
        if not claimed:
            raise Conflict(f"case {pk} is not waiting for review (it is {case.state})")
        return case

    def release(self, pk: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(reconciliation_cases)
                .where(reconciliation_cases.c.pk == pk, reconciliation_cases.c.state == DECIDING)
                .values(state=PENDING)
            )

    def close_case(self, pk: int, *, state: str, method: str, patient: Identity, actor: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(reconciliation_cases)
                .where(reconciliation_cases.c.pk == pk)
                .values(
                    state=state,
                    method=method,
                    patient_id=patient.patient_id,
                    patient_issuer=patient.issuer,
                    decided_by=actor,
                    decided_at=now(),
                )
            )

    # --- links -----------------------------------------------------------------------------
    def linked(self, issuer: str, patient_id: str) -> tuple[str, str] | None:
        query = select(patient_links.c.patient_id, patient_links.c.issuer).where(
            patient_links.c.source_issuer == issuer, patient_links.c.source_patient_id == patient_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.patient_id, row.issuer)

    def link(self, source_patient: tuple[str, str], patient: Identity) -> None:
        if source_patient == (patient.patient_id, patient.issuer) or self.linked(
            source_patient[1], source_patient[0]
        ):
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(patient_links).values(
                        source_issuer=source_patient[1],
                        source_patient_id=source_patient[0],
                        patient_id=patient.patient_id,
                        issuer=patient.issuer,
                        created_at=now(),
                    )
                )
        except IntegrityError:
            pass  # a concurrent import linked it first

    # --- instances -------------------------------------------------------------------------
    def imported_state(self, source: str, sop_uid: str) -> str | None:
        """'stored' or 'quarantined' if this source's instance was received before, else None."""
        query = select(imported_instances.c.state).where(
            imported_instances.c.source == source, imported_instances.c.original_sop_uid == sop_uid
        )
        with self.engine.connect() as conn:
            state = conn.scalar(query)
        return None if state is None else str(state)

    def add_instance(
        self, source: str, sop_uid: str, study_uid: str, case_pk: int, blob: str, state: str
    ) -> bool:
        """Record a received instance; False if it was already recorded (a concurrent import)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(imported_instances).values(
                        source=source,
                        original_sop_uid=sop_uid,
                        study_uid=study_uid,
                        case_pk=case_pk,
                        original_blob=blob,
                        state=state,
                        imported_at=now(),
                    )
                )
        except IntegrityError:
            return False
        return True

    def quarantined(self, case_pk: int) -> list[tuple[int, str, str]]:
        """(pk, original SOP Instance UID, original blob) of the instances waiting on a case."""
        query = select(
            imported_instances.c.pk, imported_instances.c.original_sop_uid, imported_instances.c.original_blob
        ).where(imported_instances.c.case_pk == case_pk, imported_instances.c.state == QUARANTINED)
        with self.engine.connect() as conn:
            return [(r.pk, r.original_sop_uid, r.original_blob) for r in conn.execute(query).all()]

    def mark_stored(self, pk: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(imported_instances).where(imported_instances.c.pk == pk).values(state=STORED))

    def count_instances(self, case_pk: int) -> int:
        query = select(func.count()).where(imported_instances.c.case_pk == case_pk)
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    # --- outside studies -------------------------------------------------------------------
    def mark_outside(self, study_uid: str, source: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(outside_studies).values(study_uid=study_uid, source=source, imported_at=now())
                )
        except IntegrityError:
            pass  # already marked (this import or an earlier one)

    def outside(self, study_uid: str) -> OutsideStudy | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(outside_studies).where(outside_studies.c.study_uid == study_uid)
            ).first()
        return None if row is None else OutsideStudy(row.study_uid, row.source, _aware(row.imported_at))

    def outside_before(self, cutoff: datetime) -> list[OutsideStudy]:
        query = (
            select(outside_studies)
            .where(outside_studies.c.imported_at < cutoff)
            .order_by(outside_studies.c.imported_at)
        )
        with self.engine.connect() as conn:
            return [
                OutsideStudy(r.study_uid, r.source, _aware(r.imported_at)) for r in conn.execute(query).all()
            ]

    def forget_outside(self, study_uid: str) -> list[tuple[str, str]]:
        """Drop the marks of a study no longer in the index (purged, deleted); returns the original
        blobs the dropped records named, (key, original SOP Instance UID) each, for the caller to
        remove where nothing else names them. Instances waiting in quarantine are kept."""
        stored = and_(imported_instances.c.study_uid == study_uid, imported_instances.c.state == STORED)
        with self.engine.begin() as conn:
            blobs = _originals(conn, stored)
            conn.execute(delete(imported_instances).where(stored))
            conn.execute(delete(outside_studies).where(outside_studies.c.study_uid == study_uid))
            return blobs

    def forget_instance(self, source: str, sop_uid: str) -> list[tuple[str, str]]:
        """Drop the record of one imported instance deleted from the index since; see forget_outside."""
        where = and_(imported_instances.c.source == source, imported_instances.c.original_sop_uid == sop_uid)
        with self.engine.begin() as conn:
            blobs = _originals(conn, where)
            conn.execute(delete(imported_instances).where(where))
            return blobs

    def stamp_outside(self, study_uid: str, when: datetime) -> None:
        """Set the import time of an outside study (retention tests, migrations from other archives)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(outside_studies)
                .where(outside_studies.c.study_uid == study_uid)
                .values(imported_at=when)
            )


def _originals(conn: Connection, where: ColumnElement[bool]) -> list[tuple[str, str]]:
    query = select(imported_instances.c.original_blob, imported_instances.c.original_sop_uid).where(where)
    return sorted({(r.original_blob, r.original_sop_uid) for r in conn.execute(query).all()})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _case(row: Any) -> Case:
    return Case(
        pk=row.pk,
        source=row.source,
        study_uid=row.study_uid,
        source_patient_id=row.source_patient_id,
        source_issuer=row.source_issuer,
        incoming=json.loads(row.incoming),
        method=row.method,
        score=row.score,
        breakdown=json.loads(row.breakdown),
        candidate=(row.candidate_patient_id, row.candidate_issuer)
        if row.candidate_patient_id is not None
        else None,
        state=row.state,
        patient=(row.patient_id, row.patient_issuer) if row.patient_id is not None else None,
        decided_by=row.decided_by,
        created_at=_aware(row.created_at),
        decided_at=_aware(row.decided_at) if row.decided_at else None,
    )
