"""`imagebridge export` and `imagebridge import --dry-run` as an operator runs them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pycdlib
import pytest
from pydicom.fileset import FileSet
from typer.testing import CliRunner

from imagebridge.cli.main import app
from imagebridge.config import Settings
from imagebridge.services.archive import open_archive
from tests.cli.test_import import summary
from tests.media.helpers import store_study


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: str) -> Result:
    """The CLI in this process (a subprocess per call costs seconds on a busy machine)."""
    outcome = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
    if outcome.exception and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return Result(outcome.exit_code, outcome.stdout, outcome.stderr)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory (embedded index) holding two studies of MRN-1 and one of MRN-2."""
    archive = open_archive(Settings(data_dir=tmp_path / "data"))
    store_study(archive, PatientID="MRN-1", PatientName="One^Pat")
    store_study(archive, series=1, PatientID="MRN-1", PatientName="One^Pat")
    store_study(archive, series=1, per_series=2, PatientID="MRN-2", PatientName="Two^Pat")
    archive.close()
    return tmp_path / "data"


def test_export_zip_iso_folder_then_dry_run_and_reimport(tmp_path: Path, data: Path) -> None:
    for target in ("mrn1.zip", "mrn1.iso", "mrn1"):
        result = run_cli(
            "export", "--patient", "MRN-1", "--out", str(tmp_path / target), "--data-dir", str(data)
        )
        assert result.returncode == 0, result.stderr
        assert "1 patient, 2 studies, 9 instances" in result.stdout
    with zipfile.ZipFile(tmp_path / "mrn1.zip") as zf:
        assert zf.testzip() is None and "DICOMDIR" in zf.namelist()
    assert len(FileSet(tmp_path / "mrn1" / "DICOMDIR")) == 9
    image = pycdlib.PyCdlib()
    image.open(str(tmp_path / "mrn1.iso"))
    assert {c.file_identifier() for c in image.list_children(iso_path="/")} >= {
        b"DICOMDIR.;1",
        b"README.TXT;1",
        b"INDEX.HTM;1",
        b"DICOM",
    }
    image.close()

    fresh = tmp_path / "fresh"
    dry = run_cli("import", str(tmp_path / "mrn1.iso"), "--dry-run", "--data-dir", str(fresh))
    assert dry.returncode == 0, dry.stderr
    assert "1 patient, 2 studies, 9 instances; 2 files would be skipped" in dry.stdout
    assert "MRN-1" in dry.stdout and not fresh.exists()

    again = run_cli("import", str(tmp_path / "mrn1.iso"), "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    rows = summary(again.stdout)
    assert rows["already present"] == "9" and rows["stored"] == "0"
    assert "not a DICOM file: web page" in again.stdout and "not a DICOM file: document" in again.stdout


def test_export_refusals_are_clear(tmp_path: Path, data: Path) -> None:
    cases = [
        (["--out", str(tmp_path / "x.zip")], "name either --patient ID or one or more --study UID"),
        (["--patient", "NOPE", "--out", str(tmp_path / "x.zip")], "no study of patient 'NOPE'"),
        (["--study", "1.2.3", "--out", str(tmp_path / "x.zip")], "study 1.2.3 is not in the archive"),
        (["--patient", "MRN-1", "--out", str(data)], "exists and is not an empty folder"),
        (["--patient", "MRN-1", "--out", str(tmp_path / "no" / "x.iso")], "does not exist"),
    ]
    for args, message in cases:
        result = run_cli("export", *args, "--data-dir", str(data))
        assert result.returncode == 2, (args, result.stdout)
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.zip").exists()
