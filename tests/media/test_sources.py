"""Media import: discs through their DICOMDIR (pydicom's dicomdirtests and variants), ISO images
built with pycdlib, nested zips, and every kind of bad input skipped with a reason."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import pycdlib
import pytest
from pydicom.data import get_testdata_file

from imagebridge.media import iso, pdi, sources
from imagebridge.services import importer
from imagebridge.services.archive import Archive
from tests.factory import make_instance, part10
from tests.media.helpers import store_study

DICOMDIR_TESTS = Path(str(get_testdata_file("DICOMDIR"))).parent
VARIANTS = [
    "DICOMDIR",
    "DICOMDIR-bigEnd",
    "DICOMDIR-implicit",
    "DICOMDIR-nooffset",
    "DICOMDIR-reordered",
    "DICOMDIR-nopatient",
]


def disc(tmp_path: Path, variant: str = "DICOMDIR") -> Path:
    """dicomdirtests' 31 instances with one of its DICOMDIR variants as the disc's DICOMDIR."""
    root = tmp_path / "disc"
    shutil.copytree(DICOMDIR_TESTS, root, ignore=shutil.ignore_patterns("DICOMDIR*", "TINY_ALPHA"))
    shutil.copy(DICOMDIR_TESTS / variant, root / "DICOMDIR")
    return root


def found(paths: list[Path]) -> tuple[list[importer.Candidate], list[tuple[str, str]], list[str]]:
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    candidates = list(sources.discover(paths, skipped, notes))
    return candidates, skipped, notes


def run_import(archive: Archive, paths: list[Path]) -> importer.Summary:
    summary = importer.Summary()
    for candidate in importer.discover(paths, summary.skipped):
        importer.import_candidate(archive.ingest, candidate, summary)
    return summary


def files_outside(tmp_path: Path, data: Path) -> dict[str, int]:
    return {
        str(p): p.lstat().st_size
        for p in tmp_path.rglob("*")
        if not p.is_relative_to(data) and not p.name.startswith("index.sqlite3") and p.is_file()
    }


@pytest.mark.parametrize("fileset_records", [sources.FILESET_RECORDS, 0], ids=["FileSet", "records"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_dicomdir_variants_are_read_through(
    tmp_path: Path, variant: str, fileset_records: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "FILESET_RECORDS", fileset_records)
    root = disc(tmp_path, variant)
    (root / "EXTRA").write_bytes(part10(make_instance()))
    candidates, skipped, notes = found([root])
    assert len(candidates) == 31 and not notes
    assert all(not c.name.endswith(("EXTRA", "DICOMDIR")) for c in candidates)
    assert (str(root / "EXTRA"), "not named in the DICOMDIR") in skipped
    assert (str(root / "README.txt"), "not a DICOM file: document (.txt)") in skipped


def test_empty_or_broken_dicomdir_falls_back_to_scanning(tmp_path: Path) -> None:
    root = disc(tmp_path, "DICOMDIR")
    shutil.copy(DICOMDIR_TESTS / "DICOMDIR-empty.dcm", root / "DICOMDIR")
    candidates, _, notes = found([root])
    assert len(candidates) == 31 and notes == [
        f"{root}/DICOMDIR: the DICOMDIR names no file; scanning its folder instead"
    ]
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    candidates, _, notes = found([root])
    assert len(candidates) == 31 and "unreadable DICOMDIR" in notes[0]


def test_dicomdir_naming_missing_files(tmp_path: Path, archive: Archive) -> None:
    root = disc(tmp_path)
    gone = [root / "98892003" / "MR700" / "4648", root / "77654033" / "CR1" / "6154"]
    for path in gone:
        path.unlink()
    summary = run_import(archive, [root])
    assert summary.stored == 29
    missing = sorted(
        name for name, reason in summary.skipped if reason == "named in the DICOMDIR but missing"
    )
    assert missing == sorted(str(p) for p in gone)
    assert run_import(archive, [root]).already_present == 29


def _iso_of(folder: Path, out: Path) -> None:
    image = pycdlib.PyCdlib()
    image.new(interchange_level=1)
    for path in sorted(folder.rglob("*")):
        iso_path = "/" + path.relative_to(folder).as_posix().upper()
        if path.is_dir():
            image.add_directory(iso_path)
        else:
            image.add_file(str(path), iso_path + ("" if "." in path.name else ".") + ";1")
    image.write(str(out))
    image.close()


def test_iso_image_with_a_dicomdir(tmp_path: Path, archive: Archive) -> None:
    root = disc(tmp_path)
    (root / "README.txt").unlink()
    (root / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER.EXE\n")
    (root / "VIEWER.EXE").write_bytes(b"MZ" + b"\0" * 64)
    image = tmp_path / "disc.iso"
    _iso_of(root, image)
    candidates, skipped, notes = found([image])
    assert len(candidates) == 31 and not notes
    assert sorted(r for _, r in skipped) == [
        "not a DICOM file: autorun or system file (autorun.inf)",
        "not a DICOM file: viewer program (.exe)",
    ]
    summary = run_import(archive, [image])
    assert summary.stored == 31 and len(summary.studies) == 6


def test_iso_without_dicomdir_is_scanned(tmp_path: Path) -> None:
    root = disc(tmp_path)
    (root / "DICOMDIR").unlink()
    image = tmp_path / "plain.iso"
    _iso_of(root, image)
    candidates, skipped, notes = found([image])
    assert len(candidates) == 31 and not notes
    assert skipped == [(f"{image}!README.TXT", "not a DICOM file: document (.txt)")]


def test_export_then_import_is_idempotent(tmp_path: Path, archive: Archive) -> None:
    study, sops = store_study(archive, series=2, per_series=2, PatientID="ROUND")
    plan = pdi.plan(archive, [study])
    (tmp_path / "out.zip").write_bytes(b"".join(plan.iter_zip()))
    iso.write_iso(plan, tmp_path / "out.iso")
    plan.write_directory(tmp_path / "folder")
    for exported in ("out.zip", "out.iso", "folder"):
        summary = run_import(archive, [tmp_path / exported])
        assert summary.already_present == len(sops) and summary.stored == 0, exported
        assert sorted(r for _, r in summary.skipped) == [
            "not a DICOM file: document (.txt)",
            "not a DICOM file: web page (.htm)",
        ], summary.skipped


def test_nested_zips_one_level(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("deep/IM1", part10(make_instance()))
        deeper = io.BytesIO()
        with zipfile.ZipFile(deeper, "w") as zf2:
            zf2.writestr("IM2", part10(make_instance()))
        zf.writestr("deeper.zip", deeper.getvalue())
    with zipfile.ZipFile(tmp_path / "outer.zip", "w") as zf:
        zf.writestr("IM0", part10(make_instance()))
        zf.writestr("inner.zip", inner.getvalue())
    candidates, skipped, _ = found([tmp_path / "outer.zip"])
    assert [c.name.rsplit("!", 1)[1] for c in candidates] == ["IM0", "deep/IM1"]
    assert skipped == [
        (f"{tmp_path}/outer.zip!inner.zip!deeper.zip", "archive nested more than one level deep")
    ]


def test_bad_input_is_skipped_with_reasons_and_nothing_written_outside(
    tmp_path: Path, archive: Archive
) -> None:
    data = Path(archive.settings.data_dir)
    media = tmp_path / "media"
    media.mkdir()
    good = part10(make_instance(PatientID="GOOD"))
    with zipfile.ZipFile(media / "evil.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in ("../escape.dcm", "/etc/abs.dcm", "C:\\win.dcm", "a/../../up.dcm", "ok/IM1"):
            zf.writestr(name, good)
        zf.writestr("bomb.dcm", b"\0" * (16 * 1024 * 1024))
    (media / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (media / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    (media / "notes.bin").write_bytes(os.urandom(300))
    (media / "broken.zip").write_bytes(b"PK\x03\x04" + os.urandom(500))
    (media / "index.html").write_text("<html></html>")
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(part10(make_instance(PatientID="SECRET")))
    (media / "link.dcm").symlink_to(secret)
    (media / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(media / "pipe")
    before = files_outside(tmp_path, data)
    summary = run_import(archive, [media])
    assert summary.stored == 1
    reasons = {name.replace(str(media), ""): reason for name, reason in summary.skipped + summary.refused}
    assert reasons["/evil.zip!../escape.dcm"] == "unsafe name (path traversal)"
    assert reasons["/evil.zip!a/../../up.dcm"] == "unsafe name (path traversal)"
    assert reasons["/evil.zip!/etc/abs.dcm"] == "unsafe name (absolute path)"
    assert reasons["/evil.zip!C:\\win.dcm"] == "unsafe name (absolute path)"
    assert reasons["/evil.zip!bomb.dcm"].endswith("(zip bomb?)")
    assert reasons["/link.dcm"] == "symbolic link pointing outside the folder"
    assert reasons["/dirlink"] == "symbolic link pointing outside the folder"
    assert reasons["/pipe"] == "not a regular file"
    assert reasons["/index.html"] == "not a DICOM file: web page (.html)"
    assert reasons["/notes.bin"] == "not a DICOM file (no DICM prefix)"
    assert reasons["/broken.zip"].startswith("damaged zip archive")
    assert {n for n, _ in summary.refused} == {str(media / "truncated.dcm"), str(media / "garbage.dcm")}
    assert files_outside(tmp_path, data) == before
    assert not (tmp_path / "escape.dcm").exists() and not (tmp_path.parent / "up.dcm").exists()
    assert sources.skip_kind(reasons["/index.html"]) == "not a DICOM file: web page"
    assert sources.skip_kind(reasons["/evil.zip!../escape.dcm"]) == "unsafe name"


def test_tiny_alpha_and_a_dicomdir_named_directly(tmp_path: Path) -> None:
    candidates, skipped, notes = found([DICOMDIR_TESTS / "TINY_ALPHA"])
    assert len(candidates) == 50 and not notes
    assert [reason for _, reason in skipped] == ["not named in the DICOMDIR"]  # its README
    root = disc(tmp_path)
    candidates, _, notes = found([root / "DICOMDIR"])
    assert len(candidates) == 31 and notes == [
        f"{root}/DICOMDIR: reading the whole folder {root} through its DICOMDIR"
    ]


def test_every_variant_imports_the_same_31_instances(tmp_path: Path, archive: Archive) -> None:
    for number, variant in enumerate([*VARIANTS, "DICOMDIR-empty.dcm"]):
        summary = run_import(archive, [disc(tmp_path / str(number), variant)])
        assert (summary.stored, summary.already_present) == ((31, 0) if number == 0 else (0, 31)), variant
        assert len(summary.studies) == 6 and not summary.refused


def test_truncated_or_garbage_iso(tmp_path: Path) -> None:
    root = disc(tmp_path)
    image = tmp_path / "disc.iso"
    _iso_of(root, image)
    data = image.read_bytes()
    (tmp_path / "cut.iso").write_bytes(data[: len(data) * 2 // 3])
    candidates, skipped, _ = found([tmp_path / "cut.iso"])
    cut = [reason for _, reason in skipped if "past the end" in reason]
    assert candidates and cut and len(candidates) + len(cut) == 31
    (tmp_path / "bad.iso").write_bytes(data[: len(data) * 3 // 10])
    candidates, skipped, _ = found([tmp_path / "bad.iso"])
    assert not candidates and skipped[0][1].startswith("damaged ISO image")
