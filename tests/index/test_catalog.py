"""Series and study instance counts: right after every kind of filing, and written once per
series and study for a whole group (SQLite group commit), not once per instance."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, select

from imagebridge.dicom.parse import ParsedInstance, parse_file
from imagebridge.errors import Conflict, InstanceConflict
from imagebridge.index import catalog as catalog_module
from imagebridge.index.catalog import Outcome, _Filing
from imagebridge.index.schema import series, studies
from imagebridge.services.archive import Archive
from tests.conftest import make_archive
from tests.samples import sample

STUDY_UID = generate_uid()


def _parsed(folder: Path, **changes: object) -> ParsedInstance:
    """CT_small as a new instance of STUDY_UID (fresh SOP Instance UID unless ``changes`` names one)."""
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    ds.StudyInstanceUID = STUDY_UID
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / f"{generate_uid()}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return parse_file(path)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _filing(parsed: ParsedInstance, version: str = "", replace: bool = False) -> _Filing:
    return _Filing(parsed, _key(parsed.sop_uid + version), 1000, replace)


def _counts(archive: Archive) -> tuple[dict[str, int], tuple[int, int]]:
    """Instances per series UID, and the study's (series, instances)."""
    with archive.engine.connect() as conn:
        per_series = dict(conn.execute(select(series.c.series_uid, series.c.num_instances)).all())
        study = conn.execute(
            select(studies.c.num_series, studies.c.num_instances).where(studies.c.study_uid == STUDY_UID)
        ).one()
    return per_series, (study.num_series, study.num_instances)


@contextmanager
def _counter_updates(archive: Archive) -> Iterator[dict[str, int]]:
    """How many statements add to the instance count of a series and of a study."""
    seen = {"series": 0, "studies": 0}

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        for table in seen:
            if statement.startswith(f"UPDATE {table} SET num_instances="):
                seen[table] += 1

    event.listen(archive.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(archive.engine, "before_cursor_execute", count)


@pytest.fixture
def sqlite_archive(tmp_path: Path) -> Iterator[Archive]:
    archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}")
    yield archive
    archive.close()


def test_a_group_updates_each_series_and_its_study_once(sqlite_archive: Archive, tmp_path: Path) -> None:
    first, second = generate_uid(), generate_uid()
    group = [_filing(_parsed(tmp_path, SeriesInstanceUID=first)) for _ in range(3)]
    group += [_filing(_parsed(tmp_path, SeriesInstanceUID=second)) for _ in range(2)]
    with _counter_updates(sqlite_archive) as updates:
        sqlite_archive.catalog._file_group(group)
    assert all(f.error is None and f.result and f.result.outcome is Outcome.STORED for f in group)
    assert updates == {"series": 2, "studies": 1}
    assert _counts(sqlite_archive) == ({first: 3, second: 2}, (2, 5))


def test_instances_refused_in_a_group_are_not_counted(sqlite_archive: Archive, tmp_path: Path) -> None:
    stored = _parsed(tmp_path)
    sqlite_archive.catalog.file(stored, _key(stored.sop_uid), 1000)
    group = [
        _filing(_parsed(tmp_path)),
        _filing(stored, version="other bytes"),  # a different object under a stored UID
        _filing(_parsed(tmp_path, PatientID="SOMEONE-ELSE")),  # the study is another patient's
        _filing(_parsed(tmp_path)),
        _filing(stored),  # the same bytes again
    ]
    sqlite_archive.catalog._file_group(group)
    assert [type(f.error) for f in group] == [type(None), InstanceConflict, Conflict, type(None), type(None)]
    assert group[-1].result == catalog_module.Filed(Outcome.ALREADY_STORED)
    assert _counts(sqlite_archive) == ({stored.series_uid: 3}, (1, 3))


def test_a_failed_group_filed_again_one_by_one_is_counted_once(
    sqlite_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = [_filing(_parsed(tmp_path)) for _ in range(3)]
    real_file = catalog_module._file
    failed: list[bool] = []

    def fail_once_on_the_last(conn: object, parsed: object, *rest: object) -> object:
        if parsed is group[-1].parsed and not failed:
            failed.append(True)
            raise RuntimeError("the group's transaction fails")
        return real_file(conn, parsed, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_module, "_file", fail_once_on_the_last)
    sqlite_archive.catalog._file_group(group)
    assert failed and all(f.result and f.result.outcome is Outcome.STORED for f in group)
    assert _counts(sqlite_archive) == ({group[0].parsed.series_uid: 3}, (1, 3))


def test_counts_follow_stores_and_replacements(archive: Archive, tmp_path: Path) -> None:
    """Both backends: a replaced instance moved to another series is counted out of its old one;
    replaced in place, it leaves the counts and marks its series and study updated."""
    first, second = generate_uid(), generate_uid()
    parsed = [_parsed(tmp_path, SeriesInstanceUID=first) for _ in range(3)]
    for p in parsed:
        assert archive.catalog.file(p, _key(p.sop_uid), 1000).outcome is Outcome.STORED
    assert _counts(archive) == ({first: 3}, (1, 3))
    moved = _parsed(tmp_path, SOPInstanceUID=parsed[0].sop_uid, SeriesInstanceUID=second)
    filed = archive.catalog.file(moved, _key("moved"), 1000, replace=True)
    assert filed.outcome is Outcome.REPLACED and filed.replaced_blob == _key(parsed[0].sop_uid)
    assert _counts(archive) == ({first: 2, second: 1}, (2, 3))
    with archive.engine.connect() as conn:
        before = conn.execute(select(series.c.updated_at).where(series.c.series_uid == first)).scalar_one()
    assert archive.catalog.file(parsed[1], _key("corrected"), 1000, replace=True).outcome is Outcome.REPLACED
    assert _counts(archive) == ({first: 2, second: 1}, (2, 3))
    with archive.engine.connect() as conn:
        after = conn.execute(select(series.c.updated_at).where(series.c.series_uid == first)).scalar_one()
    assert after > before


@contextmanager
def _statements(archive: Archive) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (their first words)."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        seen.append(" ".join(statement.split()[:3]))

    event.listen(archive.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(archive.engine, "before_cursor_execute", record)


def test_a_group_of_one_series_looks_it_up_once(sqlite_archive: Archive, tmp_path: Path) -> None:
    """Slices of one series filed together: one look-up of their UIDs, of the series and of the
    study, and one INSERT for all of their rows."""
    first = _parsed(tmp_path)
    sqlite_archive.catalog.file(first, _key(first.sop_uid), 1000)
    group = [_filing(_parsed(tmp_path)) for _ in range(5)]
    with _statements(sqlite_archive) as seen:
        sqlite_archive.catalog._file_group(group)
    assert all(f.result and f.result.outcome is Outcome.STORED for f in group)
    assert sum(s.startswith("SELECT series.pk") for s in seen) == 1
    assert sum(s.startswith("SELECT studies.pk") for s in seen) == 1
    assert sum(s.startswith("SELECT instances.sop_uid") for s in seen) == 1
    assert sum(s.startswith("INSERT INTO instances") for s in seen) == 1
    assert _counts(sqlite_archive) == ({first.series_uid: 6}, (1, 6))
    with sqlite_archive.engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(catalog_module.instances.c.sop_uid, catalog_module.instances.c.blob_key)
            ).all()
        )
    assert stored == {f.parsed.sop_uid: f.blob_key for f in [_filing(first), *group]}


def test_one_instance_twice_in_a_group(sqlite_archive: Archive, tmp_path: Path) -> None:
    """The second filing of a UID in the same group sees the first: the same bytes are already
    stored, different bytes are refused, or replace the first when asked to."""
    twice, thrice, replaced = _parsed(tmp_path), _parsed(tmp_path), _parsed(tmp_path)
    group = [
        _filing(twice),
        _filing(thrice),
        _filing(replaced),
        _filing(twice),
        _filing(thrice, version="other bytes"),
        _filing(replaced, version="corrected", replace=True),
    ]
    sqlite_archive.catalog._file_group(group)
    outcomes = [f.result.outcome if f.result else type(f.error) for f in group]
    assert outcomes == [
        Outcome.STORED,
        Outcome.STORED,
        Outcome.STORED,
        Outcome.ALREADY_STORED,
        InstanceConflict,
        Outcome.REPLACED,
    ]
    assert group[-1].result == catalog_module.Filed(Outcome.REPLACED, replaced_blob=_key(replaced.sop_uid))
    assert sqlite_archive.catalog.stored_blob(replaced.sop_uid) == _key(replaced.sop_uid + "corrected")
    assert sqlite_archive.catalog.stored_blob(thrice.sop_uid) == _key(thrice.sop_uid)
    assert _counts(sqlite_archive) == ({twice.series_uid: 3}, (1, 3))
