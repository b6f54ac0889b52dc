"""PDI file sets: the zip reads back with zipfile and pydicom's FileSet, bytes are the stored
blobs, any byte range is reproducible, memory stays flat, ZIP64 where needed."""

from __future__ import annotations

import io
import itertools
import random
import shutil
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from pydicom.fileset import FileSet

from imagebridge.errors import InvalidInput, NotFound
from imagebridge.media import pdi, zipstream
from imagebridge.services.archive import Archive
from tests.factory import make_instance
from tests.media.helpers import store_bytes, store_study


def _blob(archive: Archive, sop_uid: str) -> bytes:
    with archive.engine.connect() as conn:
        from sqlalchemy import select

        from imagebridge.index.schema import instances

        key = conn.execute(select(instances.c.blob_key).where(instances.c.sop_uid == sop_uid)).scalar_one()
    path = archive.blobs.path(key)
    assert path is not None
    return path.read_bytes()


def _zip(plan: pdi.FileSetPlan) -> bytes:
    data = b"".join(plan.iter_zip())
    assert len(data) == plan.size
    return data


def test_zip_reads_back_with_zipfile_and_fileset(archive: Archive, tmp_path: Path) -> None:
    first, first_sops = store_study(archive, PatientID="PAT-A", PatientName="Doe^Jane")
    second, second_sops = store_study(archive, series=1, PatientID="PAT-A", PatientName="Doe^Jane")
    other, other_sops = store_study(
        archive, series=3, per_series=1, PatientID="PAT-B", PatientName="Roe^Rick"
    )
    plan = pdi.plan(archive, [first, second, other])
    data = _zip(plan)
    archive_zip = zipfile.ZipFile(io.BytesIO(data))
    assert archive_zip.testzip() is None
    names = archive_zip.namelist()
    assert names[:3] == ["DICOMDIR", "README.TXT", "INDEX.HTM"]
    assert all(n.startswith("DICOM/") for n in names[3:]) and len(names) == 3 + 6 + 3 + 3
    for info in archive_zip.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        parts = info.filename.split("/")
        assert len(parts) <= 8 and all(pdi.is_file_id_component(p) for p in parts[:-1] if p != "DICOM")

    archive_zip.extractall(tmp_path / "disc")
    file_set = FileSet(tmp_path / "disc" / "DICOMDIR")
    patients = file_set.find_values("PatientID")
    assert sorted(patients) == ["PAT-A", "PAT-B"]
    assert sorted(file_set.find_values("StudyInstanceUID")) == sorted([first, second, other])
    found = {inst.SOPInstanceUID: inst for inst in file_set}
    assert set(found) == set(first_sops + second_sops + other_sops)
    for sop, inst in found.items():
        assert Path(inst.path).read_bytes() == _blob(archive, sop)
        assert inst.ReferencedTransferSyntaxUIDInFile == "1.2.840.10008.1.2.1"
        assert inst.ReferencedSOPClassUIDInFile == "1.2.840.10008.5.1.4.1.1.2"
    index = archive_zip.read("INDEX.HTM").decode()
    assert "Jane Doe" in index and "Rick Roe" in index and "PAT-B" in index
    assert b"DICOMDIR" in archive_zip.read("README.TXT")


def test_directory_equals_zip_and_reads_with_dcmtk(archive: Archive, tmp_path: Path) -> None:
    study, _ = store_study(archive, PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 100")
    plan = pdi.plan(archive, [study], title="Scans for Dr Who")
    plan.write_directory(tmp_path / "out")
    archive_zip = zipfile.ZipFile(io.BytesIO(_zip(plan)))
    for name in archive_zip.namelist():
        assert (tmp_path / "out" / name).read_bytes() == archive_zip.read(name)
    assert FileSet(tmp_path / "out" / "DICOMDIR").find_values("PatientName") == ["Müller^Jürgen"]
    assert plan.filename == "Scans-for-Dr-Who.zip"
    if shutil.which("dcmdump"):
        dump = subprocess.run(
            ["dcmdump", str(tmp_path / "out" / "DICOMDIR")], capture_output=True, text=True, errors="replace"
        )
        assert dump.returncode == 0 and "ReferencedFileID" in dump.stdout, dump.stderr
    if shutil.which("dciodvfy"):
        check = subprocess.run(
            ["dciodvfy", "-new", str(tmp_path / "out" / "DICOMDIR")],
            capture_output=True,
            text=True,
            errors="replace",
        )
        errors = [line for line in check.stderr.splitlines() if line.startswith("Error")]
        assert not errors, check.stderr


def test_any_range_reproduces_the_archive(archive: Archive) -> None:
    study, _ = store_study(archive, series=2, per_series=4, pixels=32)
    plan = pdi.plan(archive, [study])
    whole = _zip(plan)
    again = pdi.plan(archive, [study])
    assert again.etag == plan.etag and again.size == plan.size
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, plan.size), 5))
        pieces = [0, *cuts, plan.size]
        # A fresh plan for every piece: a resumed download in another request.
        assert (
            b"".join(
                b"".join(pdi.plan(archive, [study]).iter_zip(a, b)) for a, b in itertools.pairwise(pieces)
            )
            == whole
        )
    assert b"".join(plan.iter_zip(plan.size - 22)) == whole[-22:]
    with pytest.raises(ValueError):
        list(plan.iter_zip(10, 5))


def test_etag_follows_the_content(archive: Archive) -> None:
    study, _ = store_study(archive, series=1, per_series=2, PatientID="E1")
    before = pdi.plan(archive, [study])
    store_bytes(archive, _extra_instance(study))
    after = pdi.plan(archive, [study])
    assert after.etag != before.etag and after.size > before.size
    assert pdi.plan(archive, [study], title="Other").etag != after.etag


def _extra_instance(study: str) -> bytes:
    from tests.factory import part10

    return part10(make_instance(study=study, PatientID="E1", StudyID="1", SeriesNumber=9, InstanceNumber=1))


def test_memory_stays_flat_for_a_large_study(archive: Archive) -> None:
    study, _ = store_study(archive, series=1, per_series=6, pixels=1024)  # 6 x 2 MiB
    plan = pdi.plan(archive, [study])
    assert plan.size > 12 * 1024 * 1024
    tracemalloc.start()
    total = 0
    for chunk in plan.iter_zip():
        total += len(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == plan.size
    assert peak < 3 * 1024 * 1024, f"peak {peak} bytes while streaming {plan.size}"


def test_zip64_records_where_needed(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    study, sops = store_study(archive, series=1, per_series=3, pixels=64)
    monkeypatch.setattr(zipstream, "ZIP64_LIMIT", 4000)
    monkeypatch.setattr(zipstream, "ZIP64_COUNT", 4)
    plan = pdi.plan(archive, [study])
    data = _zip(plan)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    archive_zip = zipfile.ZipFile(io.BytesIO(data))
    assert archive_zip.testzip() is None
    members = [n for n in archive_zip.namelist() if n.startswith("DICOM/")]
    assert sorted(archive_zip.read(n) for n in members) == sorted(_blob(archive, s) for s in sops)
    assert b"".join(plan.iter_zip(0, 5000)) + b"".join(plan.iter_zip(5000)) == data


def test_blob_without_preamble_gets_one(archive: Archive, tmp_path: Path) -> None:
    ds = make_instance(PatientID="NOPRE", StudyID="1")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    assert buffer.getvalue()[128:132] != b"DICM"
    store_bytes(archive, buffer.getvalue())
    plan = pdi.plan(archive, [ds.StudyInstanceUID])
    plan.write_directory(tmp_path / "out")
    (instance,) = list(FileSet(tmp_path / "out" / "DICOMDIR"))
    written = Path(instance.path).read_bytes()
    assert written == b"\0" * 128 + b"DICM" + buffer.getvalue()
    assert instance.load().SOPInstanceUID == ds.SOPInstanceUID


def test_unknown_or_no_study_is_refused(archive: Archive) -> None:
    with pytest.raises(NotFound):
        pdi.plan(archive, ["1.2.3.4"])
    with pytest.raises(InvalidInput):
        pdi.plan(archive, [])


SAMPLES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "JPEG2000.dcm",
    "examples_ybr_color.dcm",
    "waveform_ecg.dcm",
    "SC_rgb.dcm",
]


def test_real_objects_get_the_right_records(archive: Archive, tmp_path: Path) -> None:
    """SR, RT, waveform, multi-frame and compressed samples: record types from their SOP classes,
    SR records without the report body, and a DICOMDIR dciodvfy accepts."""
    from pydicom.data import get_testdata_file

    for name in SAMPLES:
        store_bytes(archive, Path(str(get_testdata_file(name))).read_bytes())
    with archive.engine.connect() as conn:
        from sqlalchemy import select

        from imagebridge.index.schema import studies

        uids = [row.study_uid for row in conn.execute(select(studies.c.study_uid))]
    plan = pdi.plan(archive, uids)
    plan.write_directory(tmp_path / "out")
    file_set = FileSet(tmp_path / "out" / "DICOMDIR")
    assert len(file_set) == len(SAMPLES)
    types = {inst.node.record_type for inst in file_set}
    assert {"IMAGE", "SR DOCUMENT", "RT PLAN", "RT DOSE", "WAVEFORM"} <= types
    for inst in file_set:
        if inst.node.record_type == "SR DOCUMENT":
            assert all(
                i.RelationshipType == "HAS CONCEPT MOD" for i in inst.node._record.get("ContentSequence", [])
            )
    if shutil.which("dciodvfy"):
        check = subprocess.run(
            ["dciodvfy", "-new", str(tmp_path / "out" / "DICOMDIR")],
            capture_output=True,
            text=True,
            errors="replace",
        )
        assert not [line for line in check.stderr.splitlines() if line.startswith("Error")], check.stderr
