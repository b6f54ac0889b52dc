"""Writes to the index: file an instance under patient, study and series, or remove it.

Every write is one transaction. Races between concurrent writers are settled by
the unique constraints: the loser of a race retries and then sees the winner's
row. On SQLite a lock serialises writers so that none waits on the database's
busy timeout (which sleeps in steps of up to 100 ms): a thread lock within the
process and, between the processes of ``serve --workers N``, an ``flock`` on a
file beside the database, which wakes the next writer as soon as it is free.

Since SQLite writers take turns anyway, the instances filed while one writer commits
are filed together by the next one, in one transaction (group commit): one commit,
and so one fsync of the write-ahead log, for all of them, where each used to pay its
own. Each thread still gets its own outcome; an instance refused for a conflict is
refused before it writes anything, so the others in its transaction are unaffected.

The instance counts of series and studies are added up while a transaction files its
instances and written once per series and study at its end: a group of slices of one
series costs two UPDATEs, not two per slice (on PostgreSQL a transaction files one instance).
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from imagebridge.dicom.matching import normalise_time
from imagebridge.dicom.parse import ParsedInstance
from imagebridge.errors import Conflict, ImageBridgeError, InstanceConflict
from imagebridge.index.schema import imported_instances, instances, patients, series, studies

_RETRIES = 10
"""Attempts at filing one instance on PostgreSQL. Each lost race means another writer committed
what this one tried to create: the first instances of a new study, stored by many writers at
once, can lose several in a row (the patient, the study, the series, the instance itself) and
deadlock on the counters besides: logged in tests/test_concurrency.py on PostgreSQL, races lost
on the patient, then the series, then the instance, then deadlocks, a fourth attempt failing.
With 5, one writer ran out once in CI: its client got "the instance could not be processed"
for an instance that was stored."""


class Outcome(enum.Enum):
    STORED = "stored"
    ALREADY_STORED = "already stored"
    REPLACED = "replaced"


@dataclass(frozen=True)
class Filed:
    outcome: Outcome
    replaced_blob: str | None = None


@dataclass(frozen=True)
class Removed:
    instances: int
    blobs: list[tuple[str, str]]
    """The removed instances' blobs: (blob key, SOP Instance UID) each."""


@dataclass
class _Filing:
    """One instance waiting to be filed, and what became of it."""

    parsed: ParsedInstance
    blob_key: str
    size: int
    replace: bool
    result: Filed | None = None
    error: BaseException | None = None
    done: bool = False


def instance_conflict(sop_uid: str) -> InstanceConflict:
    """The refusal of different bytes under a SOP Instance UID already stored (without replace)."""
    return InstanceConflict(
        f"a different object is already stored as SOP Instance {sop_uid}; "
        "it was kept unchanged (set replace_on_conflict to replace it)"
    )


def person_name_search(name: str) -> str:
    """The form person names are matched in: upper case (PS3.18 §8.3.4.6 case-insensitive)."""
    return name.upper()


class Catalog:
    """The write side of the index."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self._file_lock = _writer_lock_file(engine)
        self._waiting: list[_Filing] = []
        self._waiting_lock = threading.Lock()

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction, taking this process's turn first on SQLite."""
        if self._lock is None:
            with self._transaction() as conn:
                yield conn
            return
        with self._lock, self._transaction() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction under the writer lock between processes (SQLite files only)."""
        with _flocked(self._file_lock), self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        if self._file_lock is not None:
            os.close(self._file_lock)
            self._file_lock = None

    def stored_blob(self, sop_uid: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(_BLOB_OF, {"b_sop_uid": sop_uid})

    def blob_in_use(self, key: str, sop_uid: str) -> bool:
        """Whether the index names blob ``key``, whose bytes are those of instance ``sop_uid``:
        as that instance's stored bytes, or as the bytes an import received (kept while its
        record is). Bytes name their SOP Instance UID, so no other instance row can hold them."""
        with self.engine.connect() as conn:
            if conn.scalar(_BLOB_OF, {"b_sop_uid": sop_uid}) == key:
                return True
            return conn.scalar(_ORIGINAL_BLOB, {"b_key": key}) is not None

    def file(self, parsed: ParsedInstance, blob_key: str, size: int, *, replace: bool = False) -> Filed:
        """Index one stored instance; idempotent for identical bytes."""
        if self._lock is None:
            return self._file_retrying(parsed, blob_key, size, replace)
        filing = _Filing(parsed, blob_key, size, replace)
        with self._waiting_lock:
            self._waiting.append(filing)
        with self._lock:
            if not filing.done:
                with self._waiting_lock:
                    group, self._waiting = self._waiting, []
                self._file_group(group)
        if filing.error is not None:
            raise filing.error
        if filing.result is None:
            raise RuntimeError("filing was interrupted before this instance was indexed")
        return filing.result

    def _file_retrying(self, parsed: ParsedInstance, blob_key: str, size: int, replace: bool) -> Filed:
        """One instance in its own transaction (SQLite: the caller holds the thread lock)."""
        for attempt in range(_RETRIES):
            try:
                with self._transaction() as conn:
                    known = _Known()
                    filed = _file(conn, parsed, blob_key, size, replace, known)
                    known.finish(conn)
                    return filed
            except (IntegrityError, OperationalError) as exc:
                if attempt == _RETRIES - 1 or not _retryable(exc):
                    raise
        raise AssertionError("unreachable")

    def _file_group(self, group: list[_Filing]) -> None:
        """File every waiting instance in one transaction (SQLite, thread lock held). If the
        transaction itself fails, each instance is filed again on its own, so that one
        instance's trouble is reported to its own caller only."""
        settled = False
        try:
            with self._transaction() as conn:
                known = _Known()
                known.look_up_instances(conn, [filing.parsed.sop_uid for filing in group])
                for filing in group:
                    try:
                        filing.result = _file(
                            conn, filing.parsed, filing.blob_key, filing.size, filing.replace, known
                        )
                    except ImageBridgeError as exc:  # refused before writing or counting anything
                        filing.error = exc
                known.finish(conn)
            settled = True
        except Exception:
            for filing in group:
                filing.result, filing.error = None, None
                try:
                    filing.result = self._file_retrying(
                        filing.parsed, filing.blob_key, filing.size, filing.replace
                    )
                except Exception as exc:
                    filing.error = exc
            settled = True
        finally:
            for filing in group:
                if not settled:  # interrupted: what the rolled-back transaction said does not hold
                    filing.result = None
                filing.done = True

    def remove(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> Removed:
        """Remove a study, a series or an instance; returns the removed instances' blobs (one an
        import still names stays: ``services/ingest.release`` asks :meth:`blob_in_use`)."""
        with self._writing() as conn:
            query = (
                select(
                    instances.c.pk, instances.c.blob_key, instances.c.sop_uid, series.c.pk.label("series_pk")
                )
                .join(series, instances.c.series_pk == series.c.pk)
                .join(studies, series.c.study_pk == studies.c.pk)
                .where(studies.c.study_uid == study_uid)
            )
            if series_uid is not None:
                query = query.where(series.c.series_uid == series_uid)
            if sop_uid is not None:
                query = query.where(instances.c.sop_uid == sop_uid)
            rows = conn.execute(query).all()
            for row in rows:
                conn.execute(delete(instances).where(instances.c.pk == row.pk))
            _prune(conn, study_uid)
            return Removed(len(rows), [(row.blob_key, row.sop_uid) for row in rows])


@contextmanager
def _flocked(fd: int | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``fd`` (nothing to hold when it is None)."""
    if fd is None:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _writer_lock_file(engine: Engine) -> int | None:
    """The descriptor of ``<database>.writer-lock`` for a SQLite file database, else None."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


_RETRY_SQLSTATES = {"40P01", "40001"}
"""PostgreSQL deadlock_detected and serialization_failure: the transaction was rolled back whole."""


def _retryable(exc: IntegrityError | OperationalError) -> bool:
    """A lost race (unique constraint) or a PostgreSQL deadlock between concurrent writers
    of one study (they update series and study counters in different orders)."""
    return isinstance(exc, IntegrityError) or getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


# The statements every stored instance runs, built once: constructing and cache-keying a
# Core statement per call cost more CPU than executing it.
_EXISTING = select(instances.c.pk, instances.c.blob_key, instances.c.series_pk).where(
    instances.c.sop_uid == bindparam("b_sop_uid")
)
_EXISTING_ANY = select(
    instances.c.sop_uid, instances.c.pk, instances.c.blob_key, instances.c.series_pk
).where(instances.c.sop_uid.in_(bindparam("b_sop_uids", expanding=True)))
_BLOB_OF = select(instances.c.blob_key).where(instances.c.sop_uid == bindparam("b_sop_uid"))
_ORIGINAL_BLOB = (
    select(imported_instances.c.pk).where(imported_instances.c.original_blob == bindparam("b_key")).limit(1)
)
_PATIENT_PK = select(patients.c.pk).where(
    patients.c.patient_id == bindparam("b_patient_id"), patients.c.issuer == bindparam("b_issuer")
)
_STUDY = (
    select(studies.c.pk, patients.c.patient_id, patients.c.issuer)
    .join(patients, studies.c.patient_pk == patients.c.pk)
    .where(studies.c.study_uid == bindparam("b_study_uid"))
)
_SERIES = select(series.c.pk, series.c.study_pk).where(series.c.series_uid == bindparam("b_series_uid"))
_INSERT_INSTANCE = insert(instances)
_BUMP_SERIES = (
    update(series)
    .where(series.c.pk == bindparam("b_pk"))
    .values(num_instances=series.c.num_instances + bindparam("b_delta"), updated_at=bindparam("b_now"))
)
_BUMP_STUDY = (
    update(studies)
    .where(studies.c.pk == bindparam("b_pk"))
    .values(num_instances=studies.c.num_instances + bindparam("b_delta"), updated_at=bindparam("b_now"))
)


def _now() -> datetime:
    return datetime.now(UTC)


class _Counts:
    """Instances added to (or taken from) series and studies in one transaction, by primary key;
    written when the transaction has filed all its instances."""

    def __init__(self) -> None:
        self.series: dict[int, int] = {}
        self.studies: dict[int, int] = {}

    def add(self, series_pk: int, study_pk: int, delta: int) -> None:
        """A delta of 0 still marks the series and study updated (an instance replaced in place)."""
        self.series[series_pk] = self.series.get(series_pk, 0) + delta
        self.studies[study_pk] = self.studies.get(study_pk, 0) + delta

    def write(self, conn: Connection) -> None:
        """One UPDATE per series, then one per study, each in key order (the order the
        per-instance updates used, series before study: fewer deadlocks on PostgreSQL)."""
        now = _now()
        for pk, delta in sorted(self.series.items()):
            conn.execute(_BUMP_SERIES, {"b_pk": pk, "b_delta": delta, "b_now": now})
        for pk, delta in sorted(self.studies.items()):
            conn.execute(_BUMP_STUDY, {"b_pk": pk, "b_delta": delta, "b_now": now})


@dataclass(frozen=True)
class _SeriesRef:
    pk: int
    study_pk: int


class _Known:
    """What one transaction has already read or written, by UID, so that it is not asked again.

    The instances filed together are nearly always slices of one series: once the transaction
    has found (or made) their series and study, nothing else can change those rows before it
    ends (it holds the writer lock on SQLite; on PostgreSQL it files one instance), so each
    further slice skips two look-ups. The instances of a group are looked up in one query, and
    their rows inserted in one ``executemany`` when the transaction has filed them all
    (``finish``), before the instance counts it added up (``counts``) are written."""

    def __init__(self) -> None:
        self.counts = _Counts()
        self.series: dict[str, _SeriesRef] = {}
        self.studies: dict[str, Row] = {}
        self._instances: dict[str, Row] = {}
        self._looked_up: set[str] = set()
        self._filed: set[str] = set()
        self._pending: list[dict[str, object]] = []

    def look_up_instances(self, conn: Connection, sop_uids: list[str]) -> None:
        if len(sop_uids) > 1:
            rows = conn.execute(_EXISTING_ANY, {"b_sop_uids": sop_uids}).all()
            self._instances = {row.sop_uid: row for row in rows}
            self._looked_up = set(sop_uids)

    def instance(self, conn: Connection, sop_uid: str) -> Row | None:
        """The stored instance under ``sop_uid`` (asked again when this transaction filed it)."""
        if sop_uid in self._looked_up and sop_uid not in self._filed:
            return self._instances.get(sop_uid)
        self.insert_pending(conn)
        return conn.execute(_EXISTING, {"b_sop_uid": sop_uid}).first()

    def filed(self, sop_uid: str) -> None:
        self._filed.add(sop_uid)

    def insert(self, values: dict[str, object]) -> None:
        self._pending.append(values)

    def insert_pending(self, conn: Connection) -> None:
        if self._pending:
            conn.execute(_INSERT_INSTANCE, self._pending)
            self._pending = []

    def finish(self, conn: Connection) -> None:
        """Write what the transaction has kept back: the instances' rows, then the counts."""
        self.insert_pending(conn)
        self.counts.write(conn)


def _file(
    conn: Connection,
    p: ParsedInstance,
    blob_key: str,
    size: int,
    replace: bool,
    known: _Known,
) -> Filed:
    """File one instance, adding it to ``known.counts``; every refusal is raised before anything is
    written or counted."""
    existing = known.instance(conn, p.sop_uid)
    if existing is not None and existing.blob_key == blob_key:
        return Filed(Outcome.ALREADY_STORED)
    if existing is not None and not replace:
        raise instance_conflict(p.sop_uid)
    # The series first: a series seen here has its study committed with or before it, so the
    # study read next sees that study too (concurrent writers on PostgreSQL).
    known_series: _SeriesRef | Row | None = known.series.get(p.series_uid)
    if known_series is None:
        known_series = conn.execute(_SERIES, {"b_series_uid": p.series_uid}).first()
    study = known.studies.get(p.study_uid)
    if study is None:
        study = conn.execute(_STUDY, {"b_study_uid": p.study_uid}).first()
    if study is not None and (study.patient_id, study.issuer) != (p.patient_id, p.issuer_of_patient_id):
        raise Conflict(
            f"study {p.study_uid} is filed under patient '{study.patient_id}' (issuer '{study.issuer}'); "
            f"this instance names patient '{p.patient_id}' (issuer '{p.issuer_of_patient_id}')"
        )
    if known_series is not None and (study is None or known_series.study_pk != study.pk):
        raise Conflict(f"series {p.series_uid} already belongs to another study than {p.study_uid}")
    if study is None:
        study = _new_study(conn, p, _patient(conn, p))
    series_pk = int(known_series.pk) if known_series is not None else _new_series(conn, p, study)
    known.studies[p.study_uid] = study
    known.series[p.series_uid] = _SeriesRef(series_pk, int(study.pk))
    known.filed(p.sop_uid)
    values = _instance_values(p, blob_key, size, series_pk)
    if existing is not None:
        conn.execute(update(instances).where(instances.c.pk == existing.pk).values(**values))
        _count_moved_instance(conn, known.counts, existing.series_pk, series_pk, study.pk)
        return Filed(Outcome.REPLACED, replaced_blob=existing.blob_key)
    known.insert({**values, "created_at": _now()})
    known.counts.add(series_pk, study.pk, +1)
    return Filed(Outcome.STORED)


def _patient(conn: Connection, p: ParsedInstance) -> int:
    pk = conn.scalar(_PATIENT_PK, {"b_patient_id": p.patient_id, "b_issuer": p.issuer_of_patient_id})
    if pk is not None:
        return int(pk)
    return int(
        conn.execute(
            insert(patients)
            .values(
                patient_id=p.patient_id,
                issuer=p.issuer_of_patient_id,
                name=p.patient_name,
                name_search=person_name_search(p.patient_name),
                birth_date=p.patient_birth_date,
                sex=p.patient_sex,
                attrs=p.patient_json,
                created_at=_now(),
            )
            .returning(patients.c.pk)
        ).scalar_one()
    )


def _new_study(conn: Connection, p: ParsedInstance, patient_pk: int) -> Row:
    now = _now()
    conn.execute(
        insert(studies).values(
            study_uid=p.study_uid,
            patient_pk=patient_pk,
            study_date=p.study_date,
            study_time=normalise_time(p.study_time),
            accession_number=p.accession_number,
            description=p.study_description,
            referring_physician=p.referring_physician,
            referring_search=person_name_search(p.referring_physician),
            study_id=p.study_id,
            modalities="",
            num_series=0,
            num_instances=0,
            attrs=p.study_json,
            created_at=now,
            updated_at=now,
        )
    )
    return conn.execute(_STUDY, {"b_study_uid": p.study_uid}).one()


def _new_series(conn: Connection, p: ParsedInstance, study: Row) -> int:
    # Lock the study row so that concurrent new series see each other's modality.
    conn.execute(select(studies.c.pk).where(studies.c.pk == study.pk).with_for_update()).one()
    now = _now()
    pk = conn.execute(
        insert(series)
        .values(
            series_uid=p.series_uid,
            study_pk=study.pk,
            modality=p.modality,
            series_number=p.series_number,
            description=p.series_description,
            performed_date=p.performed_start_date,
            performed_time=normalise_time(p.performed_start_time),
            num_instances=0,
            attrs=p.series_json,
            created_at=now,
            updated_at=now,
        )
        .returning(series.c.pk)
    ).scalar_one()
    modalities = conn.scalars(select(series.c.modality).where(series.c.study_pk == study.pk).distinct()).all()
    conn.execute(
        update(studies)
        .where(studies.c.pk == study.pk)
        .values(modalities="\\".join(sorted(m for m in modalities if m)), num_series=studies.c.num_series + 1)
    )
    return int(pk)


def _instance_values(p: ParsedInstance, blob_key: str, size: int, series_pk: int) -> dict[str, object]:
    return {
        "sop_uid": p.sop_uid,
        "series_pk": series_pk,
        "sop_class_uid": p.sop_class_uid,
        "instance_number": p.instance_number,
        "transfer_syntax": p.transfer_syntax,
        "blob_key": blob_key,
        "size": size,
        "rows": p.rows,
        "columns": p.columns,
        "number_of_frames": p.number_of_frames,
        "metadata": p.metadata_json,
        "frame_index": json.dumps(p.frame_index.to_json()) if p.frame_index else None,
    }


def _count_moved_instance(
    conn: Connection, counts: _Counts, old_series_pk: int, new_series_pk: int, new_study_pk: int
) -> None:
    """Count a replaced instance out of its old series and into its new one (its study's
    series, checked by ``_file``)."""
    if old_series_pk == new_series_pk:
        counts.add(new_series_pk, new_study_pk, 0)
        return
    old_study_pk = conn.scalar(select(series.c.study_pk).where(series.c.pk == old_series_pk))
    counts.add(old_series_pk, int(old_study_pk or 0), -1)
    counts.add(new_series_pk, new_study_pk, +1)


def _prune(conn: Connection, study_uid: str) -> None:
    """Recount a study after removals and drop series, study and patient left empty."""
    study = conn.execute(
        select(studies.c.pk, studies.c.patient_pk).where(studies.c.study_uid == study_uid)
    ).first()
    if study is None:
        return
    count = select(func.count()).where(instances.c.series_pk == series.c.pk).scalar_subquery()
    for row in conn.execute(select(series.c.pk, count.label("n")).where(series.c.study_pk == study.pk)).all():
        if not row.n:
            conn.execute(delete(series).where(series.c.pk == row.pk))
        else:
            conn.execute(
                update(series).where(series.c.pk == row.pk).values(num_instances=row.n, updated_at=_now())
            )
    remaining = conn.execute(
        select(func.count(), func.coalesce(func.sum(series.c.num_instances), 0)).where(
            series.c.study_pk == study.pk
        )
    ).one()
    if remaining[0] == 0:
        conn.execute(delete(studies).where(studies.c.pk == study.pk))
        if not conn.scalar(
            select(func.count()).select_from(studies).where(studies.c.patient_pk == study.patient_pk)
        ):
            conn.execute(delete(patients).where(patients.c.pk == study.patient_pk))
        return
    modalities = conn.scalars(select(series.c.modality).where(series.c.study_pk == study.pk).distinct()).all()
    conn.execute(
        update(studies)
        .where(studies.c.pk == study.pk)
        .values(
            num_series=remaining[0],
            num_instances=remaining[1],
            modalities="\\".join(sorted(m for m in modalities if m)),
            updated_at=_now(),
        )
    )
