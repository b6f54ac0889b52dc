"""Reads of the index for retrieval: which instances, where their bytes are, how they are laid out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, Select, select

from imagebridge.dicom.frames import FrameIndex
from imagebridge.errors import NotFound
from imagebridge.index.schema import instances, patients, series, studies


@dataclass(frozen=True)
class StoredInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    number_of_frames: int | None
    frame_index: FrameIndex | None


@dataclass(frozen=True)
class Target:
    """A study, a series of it, or an instance of that series (PS3.18 §10.4.1 resource levels)."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    def describe(self) -> str:
        if self.sop_uid:
            return f"instance {self.sop_uid} of series {self.series_uid} of study {self.study_uid}"
        if self.series_uid:
            return f"series {self.series_uid} of study {self.study_uid}"
        return f"study {self.study_uid}"


_COLUMNS = (
    studies.c.study_uid,
    series.c.series_uid,
    instances.c.sop_uid,
    instances.c.sop_class_uid,
    instances.c.transfer_syntax,
    instances.c.blob_key,
    instances.c.size,
    instances.c.number_of_frames,
    instances.c.frame_index,
)


def _scoped(query: Select, target: Target) -> Select:
    query = query.join(series, instances.c.series_pk == series.c.pk).join(
        studies, series.c.study_pk == studies.c.pk
    )
    query = query.where(studies.c.study_uid == target.study_uid)
    if target.series_uid is not None:
        query = query.where(series.c.series_uid == target.series_uid)
    if target.sop_uid is not None:
        query = query.where(instances.c.sop_uid == target.sop_uid)
    return query.order_by(series.c.series_number, series.c.pk, instances.c.instance_number, instances.c.pk)


class Lookup:
    """The read side of the index used by retrieval (WADO-RS, C-MOVE, C-GET)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def instances(self, target: Target) -> list[StoredInstance]:
        """Every instance under ``target``, in series then instance order; NotFound if none."""
        with self.engine.connect() as conn:
            rows = conn.execute(_scoped(select(*_COLUMNS).select_from(instances), target)).all()
        if not rows:
            raise NotFound(f"{target.describe()} is not in the archive")
        return [
            StoredInstance(
                study_uid=r.study_uid,
                series_uid=r.series_uid,
                sop_uid=r.sop_uid,
                sop_class_uid=r.sop_class_uid,
                transfer_syntax=r.transfer_syntax,
                blob_key=r.blob_key,
                size=r.size,
                number_of_frames=r.number_of_frames,
                frame_index=FrameIndex.from_json(json.loads(r.frame_index)) if r.frame_index else None,
            )
            for r in rows
        ]

    def metadata(self, target: Target) -> Iterator[str]:
        """The stored DICOM JSON text of every instance under ``target``."""
        with self.engine.connect() as conn:
            rows = conn.execute(_scoped(select(instances.c.metadata).select_from(instances), target)).all()
        if not rows:
            raise NotFound(f"{target.describe()} is not in the archive")
        for row in rows:
            yield row.metadata

    def patient_of(self, study_uid: str) -> tuple[str, str] | None:
        """(Patient ID, Issuer of Patient ID) of a study, or None if the study is unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(patients.c.patient_id, patients.c.issuer)
                .join(studies, studies.c.patient_pk == patients.c.pk)
                .where(studies.c.study_uid == study_uid)
            ).first()
        return (row.patient_id, row.issuer) if row else None
