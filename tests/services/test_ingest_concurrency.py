"""Concurrent stores (STOW parts, several clients or associations, the importer's workers) keep
the storage guarantees: one instance per SOP Instance UID, no orphan blob, no row without its blob."""

from __future__ import annotations

import fcntl
import io
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from imagebridge.errors import InstanceConflict
from imagebridge.index.schema import instances
from imagebridge.services.archive import Archive
from tests.conftest import make_archive
from tests.samples import sample


def _ct(**changes: object) -> bytes:
    """CT_small as a new instance (fresh SOP Instance UID) unless ``changes`` names one."""
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _store_at_once(archive: Archive, items: list[bytes]) -> list[object]:
    """Store ``items`` from one thread each, released together; each item's Stored or error."""
    start = threading.Barrier(len(items))
    results: list[object] = [None] * len(items)

    def store(i: int) -> None:
        start.wait(10)
        try:
            results[i] = archive.ingest.store_stream(io.BytesIO(items[i]))
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=store, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _blob_files(archive: Archive) -> list[Path]:
    return sorted(archive.blobs.root.rglob("*.dcm"))


def _count_instances(archive: Archive) -> int:
    with archive.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(instances)) or 0)


def _rows_point_at_blobs(archive: Archive) -> bool:
    with archive.engine.connect() as conn:
        keys = conn.scalars(select(instances.c.blob_key)).all()
    return all(archive.blobs.exists(key) for key in keys)


def test_concurrent_identical_stores_are_one_instance(archive: Archive) -> None:
    data = _ct()
    results = _store_at_once(archive, [data] * 6)
    outcomes = sorted(r.outcome.value for r in results)  # type: ignore[attr-defined]
    assert outcomes == ["already stored"] * 5 + ["stored"]
    assert _count_instances(archive) == 1
    [blob] = _blob_files(archive)
    assert blob.read_bytes() == data and _rows_point_at_blobs(archive)


def test_concurrent_different_objects_under_one_uid_store_one(archive: Archive) -> None:
    uid = generate_uid()
    items = [_ct(SOPInstanceUID=uid, PatientName=f"Someone^{i}") for i in range(4)]
    results = _store_at_once(archive, items)
    conflicts = [r for r in results if isinstance(r, InstanceConflict)]
    assert len(conflicts) == 3 and all("already stored" in str(c) for c in conflicts)
    assert _count_instances(archive) == 1
    assert len(_blob_files(archive)) == 1, "the refused objects' blobs are removed"
    assert _rows_point_at_blobs(archive)


def test_many_threads_store_every_instance(archive: Archive) -> None:
    items = [_ct() for _ in range(40)]
    errors: list[BaseException] = []

    def store(chunk: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            for data in chunk:
                try:
                    archive.ingest.store_stream(io.BytesIO(data))
                except BaseException as exc:
                    errors.append(exc)

        return run

    threads = [threading.Thread(target=store(items[i::4])) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert _count_instances(archive) == 40
    assert len(_blob_files(archive)) == 40 and _rows_point_at_blobs(archive)
    assert not list(archive.blobs.tmp.iterdir())


def test_failing_index_commits_leave_no_blob(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(archive.catalog, "file", crash)
    results = _store_at_once(archive, [_ct() for _ in range(4)])
    assert all(isinstance(r, OperationalError) for r in results)
    assert _count_instances(archive) == 0
    assert not _blob_files(archive), "no blob may outlive a failed index commit"
    assert not list(archive.blobs.tmp.iterdir()), "nor any spool file"


def test_sqlite_writers_in_other_processes_queue_on_the_writer_lock(tmp_path: Path) -> None:
    """`serve --workers N` runs N processes on one SQLite index: a catalog write waits on the
    file lock another process holds (instead of SQLite's sleeping busy timeout), then succeeds."""
    database = tmp_path / "index.sqlite3"
    archive = make_archive(tmp_path, f"sqlite:///{database}")
    try:
        lock = Path(f"{database}.writer-lock")
        assert lock.is_file()
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, sys, time\n"
                f"f = open({str(lock)!r}, 'r+')\n"
                "fcntl.flock(f, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\n"
                "time.sleep(1.0)\n",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        stored = archive.ingest.store_stream(io.BytesIO(_ct()))
        waited = time.monotonic() - started
        holder.wait(timeout=30)
        assert waited >= 0.5, "the write did not wait for the other process's lock"
        assert stored.outcome.value == "stored"
        with open(lock, "r+") as f:  # released again afterwards
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        archive.close()


def test_sqlite_files_waiting_instances_in_one_transaction_each_with_its_own_outcome(
    tmp_path: Path,
) -> None:
    """Group commit: instances that wait while another writer holds the SQLite write lock are
    filed by the next writer in one transaction (one commit), and an instance refused for a
    conflict is refused alone: the others in its transaction are stored."""
    from sqlalchemy import event

    archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}")
    try:
        archive.ingest.store_stream(io.BytesIO(_ct()))  # the study and its patient exist
        commits: list[int] = []
        event.listen(archive.engine, "commit", lambda _conn: commits.append(1))
        good = [_ct() for _ in range(4)]
        other_patient = _ct(PatientID="SOMEONE-ELSE")  # same study, another patient: refused
        catalog = archive.catalog
        assert catalog._lock is not None
        with catalog._lock:  # a writer is busy: everyone else queues behind it
            threads = [
                threading.Thread(target=lambda d=d: results.append(_try_store(archive, d)))
                for d in [*good[:2], other_patient, *good[2:]]
            ]
            results: list[object] = []
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(catalog._waiting) < len(threads) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(catalog._waiting) == len(threads)
        for thread in threads:
            thread.join(30)
        assert len(commits) == 1
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1 and "SOMEONE-ELSE" in str(refused[0])
        with archive.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(instances)) == 5
    finally:
        archive.close()


def _try_store(archive: Archive, data: bytes) -> object:
    try:
        return archive.ingest.store_stream(io.BytesIO(data))
    except Exception as exc:
        return exc


def test_an_interrupted_group_leaves_no_instance_reported_as_filed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group whose transaction is interrupted (not an ordinary error) is rolled back whole: an
    instance filed earlier in that transaction must not be reported as filed to its caller."""
    from imagebridge.dicom.parse import parse_file
    from imagebridge.index import catalog as catalog_module

    class Interrupted(BaseException):
        pass

    archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}")
    filings = []
    for n in range(2):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(_ct())
        filings.append(catalog_module._Filing(parse_file(path), f"{n:064x}", path.stat().st_size, False))
    real_file = catalog_module._file

    def file_then_interrupt(conn: object, parsed: object, *rest: object) -> object:
        if parsed is filings[1].parsed:
            raise Interrupted
        return real_file(conn, parsed, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_module, "_file", file_then_interrupt)
    try:
        with pytest.raises(Interrupted):
            archive.catalog._file_group(filings)
        assert all(f.done and f.result is None for f in filings)
        with archive.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(instances)) == 0
    finally:
        archive.close()
