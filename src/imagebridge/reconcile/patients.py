"""The local patients matching reads: by identity, by identifier, blocking candidates, addresses."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from imagebridge.index.schema import instances, patients, series, studies
from imagebridge.reconcile.coerce import Identity


@dataclass(frozen=True)
class LocalPatient:
    pk: int
    identity: Identity
    attrs: dict[str, Any]


class LocalPatients:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def study_in_index(self, study_uid: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(studies.c.pk).where(studies.c.study_uid == study_uid)).first() is not None
            )

    def get(self, patient_id: str, issuer: str) -> LocalPatient | None:
        query = select(patients).where(patients.c.patient_id == patient_id, patients.c.issuer == issuer)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _patient(row)

    def with_identifier(self, value: str, issuer: str) -> list[LocalPatient]:
        """Local patients whose Patient ID, or an item of Other Patient IDs Sequence, is (value, issuer)."""
        pattern = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = select(patients).where(
            or_(
                and_(patients.c.patient_id == value, patients.c.issuer == issuer),
                patients.c.attrs.like(pattern, escape="\\"),
            )
        )
        with self.engine.connect() as conn:
            found = [_patient(r) for r in conn.execute(query).all()]
        return [p for p in found if (value, issuer) in _identifiers(p)]

    def candidates(
        self, family_upper: str, birth_dates: Iterable[str], limit: int = 200
    ) -> list[LocalPatient]:
        """Blocking for the scorecard: local patients born on a plausible date or with the family name."""
        conditions = [patients.c.birth_date.in_(sorted(set(birth_dates)))]
        if family_upper:
            prefix = family_upper.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(patients.c.name_search.like(prefix + "%", escape="\\"))
        query = select(patients).where(or_(*conditions)).order_by(patients.c.pk).limit(limit)
        with self.engine.connect() as conn:
            return [_patient(r) for r in conn.execute(query).all()]

    def address(self, patient_pk: int) -> str:
        """Patient's Address (0010,1040) from one stored instance of the patient, '' if none."""
        query = (
            select(instances.c.metadata)
            .join(series, instances.c.series_pk == series.c.pk)
            .join(studies, series.c.study_pk == studies.c.pk)
            .where(studies.c.patient_pk == patient_pk)
            .limit(1)
        )
        with self.engine.connect() as conn:
            text = conn.scalar(query)
        return _first_value(json.loads(text), "00101040") if text else ""


def _patient(row: Any) -> LocalPatient:
    return LocalPatient(
        pk=row.pk,
        identity=Identity(row.patient_id, row.issuer, row.name, row.birth_date, row.sex),
        attrs=json.loads(row.attrs) if row.attrs else {},
    )


def _first_value(attrs: dict[str, Any], tag: str) -> str:
    values = attrs.get(tag, {}).get("Value") or [""]
    first = values[0]
    if isinstance(first, dict):
        return str(first.get("Alphabetic", ""))
    return str(first)


def _identifiers(patient: LocalPatient) -> set[tuple[str, str]]:
    found = {(patient.identity.patient_id, patient.identity.issuer)}
    for item in patient.attrs.get("00101002", {}).get("Value") or []:
        found.add((_first_value(item, "00100020"), _first_value(item, "00100021")))
    return found
