"""The durable access log's writer: batched, off the hot path, nothing lost under concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from imagebridge.audit import log as audit
from imagebridge.audit.context import RequestContext, bound
from imagebridge.audit.store import AuditStore
from imagebridge.index.schema import audit_events
from imagebridge.services.archive import Archive
from tests.conftest import make_archive


@pytest.fixture
def archive(tmp_path: Path, database_url: str) -> Iterator[Archive]:
    archive = make_archive(tmp_path, database_url)
    yield archive
    archive.close()


def rows(archive: Archive, **where: str) -> int:
    query = select(func.coalesce(func.sum(audit_events.c.count), 0)).where(
        *(audit_events.c[k] == v for k, v in where.items())
    )
    with archive.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_concurrent_records_are_all_stored(archive: Archive) -> None:
    store = AuditStore(archive.engine)
    threads, each = 8, 400

    def work(n: int) -> None:
        for i in range(each):
            outcome = "deny" if i % 10 == 0 else "allow"
            audit.record(
                outcome, "test", store=store, client_id=f"c{n}", instance=f"1.2.{n}.{i}", patient="p"
            )

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queued = time.perf_counter() - started
    store.flush()
    assert rows(archive) == threads * each
    assert rows(archive, outcome="deny") == threads * each // 10
    assert store.dropped == 0
    print(f"{threads * each} records queued in {queued * 1000:.0f} ms from {threads} threads")
    store.close()


def test_identical_allows_are_coalesced_denials_never(archive: Archive) -> None:
    store = AuditStore(archive.engine, interval=0.01)
    for _ in range(50):
        audit.record("allow", "frames", store=store, client_id="viewer", study="1.2.3", patient="p")
    store.flush()
    for _ in range(50):
        audit.record("allow", "frames", store=store, client_id="viewer", study="1.2.3", patient="p")
    for _ in range(7):
        audit.record("deny", "nope", store=store, client_id="viewer", study="1.2.3", patient="p")
    store.flush()
    found = store.search(patient="p")
    allows = [e for e in found if e.outcome == "allow"]
    assert len(allows) == 1 and allows[0].count == 100
    assert len([e for e in found if e.outcome == "deny"]) == 7
    store.close()


def test_a_full_queue_still_keeps_every_denial(archive: Archive) -> None:
    store = AuditStore(archive.engine, queue_size=4, interval=0.5, batch=2)
    for i in range(60):
        audit.record("deny", "refused", store=store, client_id="x", instance=f"1.{i}", patient="q")
    store.flush()
    assert rows(archive, outcome="deny") == 60
    store.close()


def test_close_flushes_and_later_records_are_written_directly(archive: Archive) -> None:
    store = AuditStore(archive.engine, interval=5)
    audit.record("allow", "queued", store=store, patient="r", client_id="a")
    store.close()
    assert rows(archive, patient="r") == 1
    audit.record("deny", "after close", store=store, patient="r", client_id="b")
    assert rows(archive, patient="r") == 2


def test_request_context_and_attached_stores(archive: Archive) -> None:
    store = AuditStore(archive.engine)
    with bound(RequestContext(remote="192.0.2.7", user_agent="ua/1", surface="dicomweb", store=store)):
        audit.record("allow", "in a request", patient="s", client_id="c")
    audit.attach(store)
    try:
        audit.record("deny", "outside any request", patient="s", client_id="d")
    finally:
        audit.detach(store)
    audit.record("deny", "nobody listening", patient="s", client_id="e")
    store.flush()
    found = {e.client_id: e for e in store.search(patient="s")}
    assert set(found) == {"c", "d"}
    assert found["c"].remote == "192.0.2.7" and found["c"].user_agent == "ua/1"
    assert found["c"].detail == {"surface": "dicomweb"}
    store.close()


def test_recording_is_cheap(archive: Archive) -> None:
    store = AuditStore(archive.engine)
    n = 2000
    started = time.perf_counter()
    for i in range(n):
        audit.record("allow", "frame", store=store, client_id="viewer", instance=f"1.2.{i}", patient="t")
    per_call = (time.perf_counter() - started) / n
    store.flush()
    assert rows(archive, patient="t") == n
    print(f"audit.record: {per_call * 1e6:.0f} µs per call")
    assert per_call < 0.002
    store.close()


def test_the_writer_stops_when_idle_and_comes_back(archive: Archive) -> None:
    store = AuditStore(archive.engine)
    store.idle_seconds = 0.05
    audit.record("allow", "one", store=store, patient="u", client_id="a")
    store.flush()
    deadline = time.monotonic() + 5
    while store._thread is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store._thread is None
    audit.record("deny", "two", store=store, patient="u", client_id="b")
    store.flush()
    assert rows(archive, patient="u") == 2
    store.close()


def test_one_store_per_engine(archive: Archive) -> None:
    assert AuditStore.of(archive.engine) is AuditStore.of(archive.engine)


def _record_and_exit(url: str) -> None:
    from imagebridge.index import db

    store = AuditStore(db.make_engine(url), interval=30)
    audit.record("deny", "the worker's last record", store=store, patient="mp")


def test_a_forked_worker_flushes_when_it_ends(tmp_path: Path) -> None:
    import multiprocessing

    from imagebridge.index import db

    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    child = multiprocessing.get_context("fork").Process(target=_record_and_exit, args=(url,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).where(audit_events.c.patient == "mp")).scalar_one()
    assert stored == 1
    engine.dispose()
