"""Storage you can trust: byte-for-byte, atomic, idempotent, never an index row without its blob."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import event, func, select

from imagebridge.errors import Conflict, InstanceConflict, MissingAttribute, NotDicom, StudyMismatch
from imagebridge.index.catalog import Outcome
from imagebridge.index.lookup import Target
from imagebridge.index.schema import instances, patients, studies
from imagebridge.reconcile.records import PENDING, QUARANTINED, Records
from imagebridge.services import delete
from imagebridge.services.archive import Archive
from imagebridge.services.ingest import release
from tests.conftest import make_archive
from tests.samples import sample


def _bytes_of(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _store_bytes(archive: Archive, data: bytes, **kwargs: object) -> object:
    return archive.ingest.store_stream(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]


def _count(archive: Archive, table: object) -> int:
    with archive.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


def _blob_files(archive: Archive) -> list[Path]:
    return sorted(archive.blobs.root.rglob("*.dcm"))


def test_stored_bytes_are_the_received_bytes(archive: Archive) -> None:
    original = sample("JPEG2000.dcm").read_bytes()
    stored = _store_bytes(archive, original)
    [instance] = archive.lookup.instances(Target(stored.study_uid))  # type: ignore[attr-defined]
    with archive.blobs.open(instance.blob_key) as fh:
        assert fh.read() == original
    assert instance.transfer_syntax == "1.2.840.10008.1.2.4.91"
    assert not list(archive.blobs.tmp.iterdir()), "the spool must not leave files behind"


def test_identical_instance_again_changes_nothing(archive: Archive) -> None:
    data = sample("CT_small.dcm").read_bytes()
    first = _store_bytes(archive, data)
    [blob] = _blob_files(archive)
    written = blob.stat()
    again = _store_bytes(archive, data)
    assert first.outcome is Outcome.STORED  # type: ignore[attr-defined]
    assert again.outcome is Outcome.ALREADY_STORED  # type: ignore[attr-defined]
    assert _blob_files(archive) == [blob]
    assert blob.stat().st_ino == written.st_ino, "the stored file is not written over"
    assert _count(archive, instances) == 1
    assert not list(archive.blobs.tmp.iterdir())


def test_storing_again_during_a_delete_leaves_no_row_without_its_blob(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete that lands after the bytes of a repeated store reach the blob store and before
    they are filed removes the blob: filed after it, the instance would point at nothing. The
    instance found stored is not written again, so no such moment exists."""
    data = sample("CT_small.dcm").read_bytes()
    stored = _store_bytes(archive, data)
    real_put = archive.blobs.put

    def put_then_delete(spool: object) -> str:
        key = real_put(spool)  # type: ignore[arg-type]
        delete.delete(Target(stored.study_uid), archive.catalog, archive.blobs)  # type: ignore[attr-defined]
        return key

    monkeypatch.setattr(archive.blobs, "put", put_then_delete)
    again = _store_bytes(archive, data)
    with archive.engine.connect() as conn:
        keys = conn.scalars(select(instances.c.blob_key)).all()
    assert all(archive.blobs.exists(k) for k in keys), "a row points at a deleted blob"
    assert again.outcome is Outcome.ALREADY_STORED  # type: ignore[attr-defined]


def test_a_delete_that_removes_the_blob_before_a_repeated_store_files_it(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete commits first (the repeated store then finds no row and files the instance
    again), but removes the blob between the store's put and its filing, asking the index before
    the new row is there. The store checks the blob after filing and puts it back from its
    spool."""
    data = sample("CT_small.dcm").read_bytes()
    stored = _store_bytes(archive, data)
    held_back: list[tuple[object, ...]] = []
    monkeypatch.setattr(delete, "release", lambda *args: held_back.append(args))
    delete.delete(Target(stored.study_uid), archive.catalog, archive.blobs)  # type: ignore[attr-defined]
    assert len(held_back) == 1 and _count(archive, instances) == 0
    real_file = archive.catalog.file

    def remove_then_file(*args: object, **kwargs: object) -> object:
        assert release(*held_back.pop()) is True  # type: ignore[arg-type]
        return real_file(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(archive.catalog, "file", remove_then_file)
    again = _store_bytes(archive, data)
    assert not held_back and again.outcome is Outcome.STORED  # type: ignore[attr-defined]
    [instance] = archive.lookup.instances(Target(stored.study_uid))  # type: ignore[attr-defined]
    with archive.blobs.open(instance.blob_key) as fh:
        assert fh.read() == data
    assert not list(archive.blobs.tmp.iterdir())


def test_a_delete_that_removes_the_blob_after_a_repeated_store_filed_it(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same instance is stored again between the delete's index commit and its removal of
    the blob: the delete finds the new row naming the blob and keeps it."""
    data = sample("CT_small.dcm").read_bytes()
    stored = _store_bytes(archive, data)
    real_remove = archive.catalog.remove
    again: list[object] = []

    def remove_then_store_again(*args: object) -> object:
        removed = real_remove(*args)  # type: ignore[arg-type]
        again.append(_store_bytes(archive, data))
        return removed

    monkeypatch.setattr(archive.catalog, "remove", remove_then_store_again)
    assert delete.delete(Target(stored.study_uid), archive.catalog, archive.blobs) == 1  # type: ignore[attr-defined]
    assert again[0].outcome is Outcome.STORED  # type: ignore[attr-defined]
    [instance] = archive.lookup.instances(Target(stored.study_uid))  # type: ignore[attr-defined]
    with archive.blobs.open(instance.blob_key) as fh:
        assert fh.read() == data


def test_a_delete_keeps_bytes_an_import_holds(archive: Archive) -> None:
    """Bytes an import keeps as received (here waiting in quarantine) and the same bytes stored
    and then deleted: the blob stays, the import still needs it."""
    data = sample("CT_small.dcm").read_bytes()
    stored = _store_bytes(archive, data)
    [instance] = archive.lookup.instances(Target(stored.study_uid))  # type: ignore[attr-defined]
    records = Records(archive.engine)
    case = records.open_case(
        {
            "source": "cd",
            "study_uid": stored.study_uid,  # type: ignore[attr-defined]
            "source_patient_id": "CD-1",
            "source_issuer": "cd",
            "incoming": "{}",
            "method": "manual",
            "breakdown": "{}",
            "state": PENDING,
        }
    )
    records.add_instance("cd", stored.sop_uid, stored.study_uid, case.pk, instance.blob_key, QUARANTINED)  # type: ignore[attr-defined]
    delete.delete(Target(stored.study_uid), archive.catalog, archive.blobs)  # type: ignore[attr-defined]
    assert _count(archive, instances) == 0
    assert archive.blobs.exists(instance.blob_key)
    assert archive.catalog.blob_in_use(instance.blob_key, stored.sop_uid)  # type: ignore[attr-defined]


def test_a_new_instance_is_looked_up_once(archive: Archive) -> None:
    """New bytes (no blob has their digest) are told apart from stored ones by the filing
    transaction alone: no separate look-up of the SOP Instance UID first."""
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    _store_bytes(archive, _bytes_of(ds))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    lookups: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "FROM instances" in statement and "sop_uid" in statement.split("WHERE", 1)[-1]:
            lookups.append(statement)

    event.listen(archive.engine, "before_cursor_execute", record)
    stored = _store_bytes(archive, _bytes_of(ds))
    event.remove(archive.engine, "before_cursor_execute", record)
    assert stored.outcome is Outcome.STORED  # type: ignore[attr-defined]
    assert len(lookups) == 1, lookups


def test_different_object_under_same_uid_is_refused_and_original_kept(archive: Archive) -> None:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    original = _bytes_of(ds)
    _store_bytes(archive, original)
    ds.PatientName = "Someone^Else"
    with pytest.raises(InstanceConflict, match="already stored"):
        _store_bytes(archive, _bytes_of(ds))
    [instance] = archive.lookup.instances(Target(ds.StudyInstanceUID))
    with archive.blobs.open(instance.blob_key) as fh:
        assert fh.read() == original
    assert len(_blob_files(archive)) == 1
    assert not list(archive.blobs.tmp.iterdir())


def test_a_refusal_keeps_a_blob_that_was_there_before(archive: Archive) -> None:
    """An import keeps the bytes it received as a blob no instance row points at (the coerced
    copy is what is filed, under the same SOP Instance UID). Those bytes stored again are
    refused, and their blob, there before, is kept."""
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    received = _bytes_of(ds)
    spool = archive.blobs.spool()
    spool.write(received)
    kept = archive.blobs.put(spool)
    ds.PatientID = "LOCAL-1"
    _store_bytes(archive, _bytes_of(ds))
    with pytest.raises(InstanceConflict, match="already stored"):
        _store_bytes(archive, received)
    assert archive.blobs.exists(kept)
    assert len(_blob_files(archive)) == 2


def test_replace_setting_replaces_and_removes_old_blob(tmp_path: Path, database_url: str) -> None:
    archive = make_archive(tmp_path, database_url, replace_on_conflict=True)
    try:
        ds = pydicom.dcmread(sample("CT_small.dcm"))
        _store_bytes(archive, _bytes_of(ds))
        ds.SeriesDescription = "corrected"
        newer = _bytes_of(ds)
        result = _store_bytes(archive, newer)
        assert result.outcome is Outcome.REPLACED  # type: ignore[attr-defined]
        [instance] = archive.lookup.instances(Target(ds.StudyInstanceUID))
        with archive.blobs.open(instance.blob_key) as fh:
            assert fh.read() == newer
        assert len(_blob_files(archive)) == 1
        assert _count(archive, instances) == 1
    finally:
        archive.close()


def test_patients_are_keyed_by_id_and_issuer(archive: Archive) -> None:
    for issuer in ("HOSPITAL_A", "HOSPITAL_B"):
        ds = pydicom.dcmread(sample("CT_small.dcm"))
        ds.IssuerOfPatientID = issuer
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
            generate_uid(),
            generate_uid(),
            generate_uid(),
        )
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        _store_bytes(archive, _bytes_of(ds))
    with archive.engine.connect() as conn:
        rows = conn.execute(
            select(patients.c.patient_id, patients.c.issuer).order_by(patients.c.issuer)
        ).all()
    assert [tuple(r) for r in rows] == [("1CT1", "HOSPITAL_A"), ("1CT1", "HOSPITAL_B")]


def test_instance_naming_another_patient_for_a_known_study_is_refused(archive: Archive) -> None:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    _store_bytes(archive, _bytes_of(ds))
    ds.PatientID = "SOMEONE-ELSE"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with pytest.raises(Conflict, match="filed under patient"):
        _store_bytes(archive, _bytes_of(ds))
    assert _count(archive, instances) == 1


def test_study_named_by_the_caller_must_match(archive: Archive) -> None:
    with pytest.raises(StudyMismatch, match=r"not to study 1\.2\.3"):
        _store_bytes(archive, sample("CT_small.dcm").read_bytes(), study_uid="1.2.3")
    assert _count(archive, instances) == 0
    assert not _blob_files(archive)


@pytest.mark.parametrize(
    ("name", "error"),
    [("no_meta.dcm", NotDicom), ("README.txt", NotDicom), ("JPEGLSNearLossless_08.dcm", MissingAttribute)],
)
def test_unusable_input_leaves_nothing_behind(archive: Archive, name: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        _store_bytes(archive, sample(name).read_bytes())
    assert _count(archive, instances) == 0
    assert not _blob_files(archive)
    assert not list(archive.blobs.tmp.iterdir())


def test_failure_while_indexing_removes_the_new_blob(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("index went away")

    monkeypatch.setattr(archive.catalog, "file", crash)
    with pytest.raises(RuntimeError):
        _store_bytes(archive, sample("CT_small.dcm").read_bytes())
    assert not _blob_files(archive), "no blob may outlive a failed index commit"
    assert _count(archive, instances) == 0


def test_index_rows_always_point_at_existing_blobs(archive: Archive) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "examples_ybr_color.dcm"):
        _store_bytes(archive, sample(name).read_bytes())
    with archive.engine.connect() as conn:
        keys = conn.scalars(select(instances.c.blob_key)).all()
    assert keys and all(archive.blobs.exists(k) for k in keys)


def test_delete_removes_rows_then_blobs_and_recounts(archive: Archive) -> None:
    ct = pydicom.dcmread(sample("CT_small.dcm"))
    _store_bytes(archive, _bytes_of(ct))
    second = copy.deepcopy(ct)
    second.SeriesInstanceUID, second.SOPInstanceUID, second.Modality = generate_uid(), generate_uid(), "MR"
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    _store_bytes(archive, _bytes_of(second))
    assert (
        delete.delete(Target(ct.StudyInstanceUID, ct.SeriesInstanceUID), archive.catalog, archive.blobs) == 1
    )
    with archive.engine.connect() as conn:
        study = conn.execute(select(studies)).one()
    assert (study.num_series, study.num_instances, study.modalities) == (1, 1, "MR")
    assert len(_blob_files(archive)) == 1
    delete.delete(Target(ct.StudyInstanceUID), archive.catalog, archive.blobs)
    assert _count(archive, studies) == 0 and _count(archive, patients) == 0
    assert not _blob_files(archive)


@pytest.mark.parametrize("name", ["CT_small.dcm", "examples_ybr_color.dcm", "MR_small_RLE.dcm"])
def test_frame_index_locates_the_stored_pixel_bytes(archive: Archive, name: str) -> None:
    """Small pixel values are read eagerly at ingest; their offsets must still be indexed."""
    stored = _store_bytes(archive, sample(name).read_bytes())
    [instance] = archive.lookup.instances(Target(stored.study_uid))  # type: ignore[attr-defined]
    assert instance.frame_index is not None
    ds = pydicom.dcmread(sample(name))
    with archive.blobs.open(instance.blob_key) as fh:
        data = fh.read()
    first = b"".join(data[f.offset : f.offset + f.length] for f in instance.frame_index.locate(1))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        assert first == pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=instance.frame_index.count)
    else:
        assert first == ds.PixelData[: len(first)]
