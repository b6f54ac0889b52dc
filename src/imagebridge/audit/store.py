"""The durable access log: audit records written to ``audit_events`` in batches, off the hot path.

OHIF asks for hundreds of frames per study and every DICOMweb request records an allow decision,
so :meth:`AuditStore.add` only puts the record on a bounded in-process queue; one background
thread writes what has accumulated in one transaction every ``interval`` seconds (up to four times
``batch`` rows a transaction), without being woken by each record. Identical *allow* records within ``coalesce_seconds`` become one row whose
``count`` grows. Nothing else is ever merged or dropped: when the queue is full, a deny or any
other non-allow record is written synchronously by the caller; only allow records may be dropped,
and then they are counted in :attr:`AuditStore.dropped` and still present in the log lines.

:meth:`flush` waits until everything queued so far is in the database (tests, shutdown);
:meth:`close` flushes and stops the thread (also run at interpreter exit).
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing.util
import os
import queue
import secrets
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, insert, or_, select, update

from imagebridge.index.schema import audit_events

log = logging.getLogger(__name__)

QUEUE_SIZE = 20000
BATCH = 500
INTERVAL = 0.25
COALESCE_SECONDS = 5.0
IDLE_SECONDS = 10.0

_COLUMNS = {
    "client_id": "client_id",
    "user": "user",
    "share": "share_id",
    "token_patient": "token_patient",
    "remote": "remote",
    "user_agent": "user_agent",
    "resource": "resource",
    "interaction": "interaction",
    "patient": "patient",
    "study": "study_uid",
    "series": "series_uid",
    "instance": "instance_uid",
}
_KEPT = {"at", "outcome", "reason", "action", *_COLUMNS}


@dataclass(frozen=True)
class AuditRecord:
    """One row of the access log, as read back."""

    event_id: str
    recorded: datetime
    action: str
    outcome: str
    reason: str
    client_id: str | None = None
    user: str | None = None
    share_id: str | None = None
    token_patient: str | None = None
    remote: str | None = None
    user_agent: str | None = None
    resource: str | None = None
    interaction: str | None = None
    patient: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    instance_uid: str | None = None
    count: int = 1
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def studies(self) -> list[str]:
        """Every study the event is about: its own column plus any listed in the detail (a share)."""
        listed = [s for s in self.detail.get("studies", []) if isinstance(s, str)]
        return list(dict.fromkeys(([self.study_uid] if self.study_uid else []) + listed))


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
_stores: weakref.WeakValueDictionary[int, AuditStore] = weakref.WeakValueDictionary()
"""The store of each engine (by ``id``: a live store keeps its engine alive, so the id is not reused)."""
_stores_lock = threading.Lock()
_live: weakref.WeakSet[AuditStore] = weakref.WeakSet()


def _close_all() -> None:
    for store in list(_live):
        store.close()


atexit.register(_close_all)
_finalizer_pid: int | None = None


def _at_process_exit() -> None:
    """A forked worker process ends through multiprocessing, which skips atexit (and forgets the
    parent's finalizers) but runs its own: register there too, once per process."""
    global _finalizer_pid
    if _finalizer_pid != os.getpid():
        _finalizer_pid = os.getpid()
        multiprocessing.util.Finalize(None, _close_all, exitpriority=100)


class AuditStore:
    """Writes and reads ``audit_events`` for one index database."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = INTERVAL,
        batch: int = BATCH,
        queue_size: int = QUEUE_SIZE,
        coalesce_seconds: float = COALESCE_SECONDS,
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.batch = batch
        self.coalesce_seconds = coalesce_seconds
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._recent: dict[tuple[Any, ...], tuple[str, float]] = {}
        self._closed = False
        self._write_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._urgent = threading.Event()
        """Set by a flush or close: the writer stops gathering and writes at once."""
        self.idle_seconds = IDLE_SECONDS
        _live.add(self)
        _at_process_exit()

    @classmethod
    def of(cls, engine: Engine) -> AuditStore:
        """The one store of ``engine`` in this process (created on first use)."""
        with _stores_lock:
            store = _stores.get(id(engine))
            if store is None or store._closed or store.engine is not engine:
                store = cls(engine)
                _stores[id(engine)] = store
            return store

    @classmethod
    def close_of(cls, engine: Engine) -> AuditStore | None:
        """Flush and close ``engine``'s store, if this process made one (the archive is closing)."""
        with _stores_lock:
            store = _stores.pop(id(engine), None)
        if store is None or store.engine is not engine:
            return None
        store.close()
        return store

    # --- writing --------------------------------------------------------------------------

    def add(self, entry: dict[str, Any]) -> None:
        """Queue one record (as made by ``audit.log.record``); never blocks on the database."""
        row = _row(entry)
        if self._closed:
            self._safe_write([row])
            return
        try:
            self._queue.put_nowait(row)
            self._ensure_writer()
            return
        except queue.Full:
            pass
        if row["outcome"] != "allow":
            self._safe_write([row])
            return
        try:
            self._queue.put(row, timeout=0.05)
        except queue.Full:
            self.dropped += 1
            log.warning("audit queue full: an allow record was not stored (%d so far)", self.dropped)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every record queued before the call is in the database."""
        if self._closed or (self._thread is None and self._queue.empty()):
            return
        marker = _Flush()
        self._queue.put(marker)
        self._urgent.set()
        self._ensure_writer()
        if not marker.done.wait(timeout):
            raise TimeoutError("the audit writer did not flush in time")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._urgent.set()
        self._ensure_writer()
        with self._thread_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        rows, markers = self._leftovers()
        self._safe_write(rows)
        for marker in markers:
            marker.done.set()

    def _leftovers(self) -> tuple[list[dict[str, Any]], list[_Flush]]:
        """Whatever raced into the queue behind the stop (written by ``close`` itself)."""
        rows: list[dict[str, Any]] = []
        markers: list[_Flush] = []
        while True:
            try:
                self._collect(self._queue.get_nowait(), rows, markers)
            except queue.Empty:
                return rows, markers

    def _ensure_writer(self) -> None:
        """Start the writer thread if none runs (it ends by itself after ``idle_seconds`` of quiet)."""
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _next(self) -> Any:
        """The next queued item, or None when the writer has been idle long enough to stop."""
        while True:
            try:
                return self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._thread_lock:
                    if self._queue.empty():
                        self._thread = None
                        return None

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            rows: list[dict[str, Any]] = []
            markers: list[_Flush] = []
            stop = self._collect(item, rows, markers)
            if not stop and not markers:
                # Let the interval's records gather without waking the writer for each one (a
                # wake per record cost every request a thread switch); a flush or close wakes it.
                self._urgent.wait(self.interval)
                self._urgent.clear()
            stop = self._drain(rows, markers) or stop
            self._safe_write(rows)
            for marker in markers:
                marker.done.set()
            if stop:
                return

    def _collect(self, item: Any, rows: list[dict[str, Any]], markers: list[_Flush]) -> bool:
        if item is _STOP:
            return True
        if isinstance(item, _Flush):
            markers.append(item)
        else:
            rows.append(item)
        return False

    def _drain(self, rows: list[dict[str, Any]], markers: list[_Flush]) -> bool:
        """Take whatever else is already queued, without waiting (a flush must see everything before it)."""
        stop = False
        while len(rows) < self.batch * 4:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            stop = self._collect(item, rows, markers) or stop
        return stop

    def _safe_write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            self._write(rows)
        except Exception:
            log.exception("could not store %d audit records; they remain in the log lines", len(rows))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows``; allow rows identical to one written in the last few seconds add to its count."""
        with self._write_lock:
            now = time.monotonic()
            self._recent = {k: v for k, v in self._recent.items() if now - v[1] < self.coalesce_seconds}
            inserts: list[dict[str, Any]] = []
            merged: dict[str, int] = {}
            pending: dict[tuple[Any, ...], dict[str, Any]] = {}
            for row in rows:
                key = _coalesce_key(row)
                if key is not None and key in pending:
                    pending[key]["count"] += 1
                elif key is not None and key in self._recent:
                    event_id = self._recent[key][0]
                    merged[event_id] = merged.get(event_id, 0) + 1
                else:
                    inserts.append(row)
                    if key is not None:
                        pending[key] = row
            with self.engine.begin() as conn:
                if inserts:
                    conn.execute(insert(audit_events), inserts)
                for event_id, extra in merged.items():
                    conn.execute(
                        update(audit_events)
                        .where(audit_events.c.event_id == event_id)
                        .values(count=audit_events.c.count + extra)
                    )
            for key, row in pending.items():
                self._recent[key] = (row["event_id"], now)
            self.written += len(rows)

    # --- reading --------------------------------------------------------------------------

    def get(self, event_id: str) -> AuditRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_events).where(audit_events.c.event_id == event_id)).first()
        return _record(row) if row else None

    def search(
        self, where: Sequence[ColumnElement[bool]] = (), *, limit: int = 100, offset: int = 0, **filters: Any
    ) -> list[AuditRecord]:
        """Events newest first; ``filters`` are those of :func:`conditions`."""
        query = (
            select(audit_events)
            .where(*where, *conditions(**filters))
            .order_by(audit_events.c.recorded.desc(), audit_events.c.pk.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).all()]

    def count(self, where: Sequence[ColumnElement[bool]] = (), **filters: Any) -> int:
        query = select(func.count()).select_from(audit_events).where(*where, *conditions(**filters))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def conditions(
    *,
    patient: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    studies: Sequence[str] = (),
    actions: Sequence[str] = (),
) -> list[ColumnElement[bool]]:
    """``until`` is exclusive; ``studies`` match the study column or a share's list of studies."""
    found: list[ColumnElement[bool]] = []
    if patient is not None:
        found.append(audit_events.c.patient == patient)
    if since is not None:
        found.append(audit_events.c.recorded >= since)
    if until is not None:
        found.append(audit_events.c.recorded < until)
    if studies:
        found.append(
            or_(
                audit_events.c.study_uid.in_(list(studies)),
                *(audit_events.c.detail.contains(f'"{uid}"') for uid in studies),
            )
        )
    if actions:
        found.append(audit_events.c.action.in_(list(actions)))
    return found


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    at = entry.get("at")
    recorded = datetime.fromisoformat(at) if isinstance(at, str) else datetime.now(UTC)
    row: dict[str, Any] = {
        "event_id": secrets.token_hex(16),
        "recorded": recorded,
        "action": str(entry.get("action") or "access")[:64],
        "outcome": str(entry.get("outcome", ""))[:16],
        "reason": str(entry.get("reason", "")),
        "count": 1,
        "detail": json.dumps({k: v for k, v in entry.items() if k not in _KEPT}, sort_keys=True, default=str),
    }
    for name, column in _COLUMNS.items():
        value = entry.get(name)
        row[column] = None if value is None else str(value)
    for column in ("study_uid", "series_uid", "instance_uid"):
        if row[column] is not None and len(row[column]) > 64:
            row[column] = None
    return row


def _coalesce_key(row: dict[str, Any]) -> tuple[Any, ...] | None:
    if row["outcome"] != "allow":
        return None
    return tuple(v for k, v in sorted(row.items()) if k not in ("event_id", "recorded", "count"))


def _record(row: Any) -> AuditRecord:
    recorded = row.recorded if row.recorded.tzinfo else row.recorded.replace(tzinfo=UTC)
    return AuditRecord(
        event_id=row.event_id,
        recorded=recorded,
        action=row.action,
        outcome=row.outcome,
        reason=row.reason,
        client_id=row.client_id,
        user=row.user,
        share_id=row.share_id,
        token_patient=row.token_patient,
        remote=row.remote,
        user_agent=row.user_agent,
        resource=row.resource,
        interaction=row.interaction,
        patient=row.patient,
        study_uid=row.study_uid,
        series_uid=row.series_uid,
        instance_uid=row.instance_uid,
        count=row.count,
        detail=json.loads(row.detail or "{}"),
    )
