"""`imagebridge import` as an administrator runs it: folders, zips, junk, re-runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.samples import sample

CLI = [sys.executable, "-m", "imagebridge"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=environment)


def summary(out: str) -> dict[str, str]:
    """The rows of the closing summary table."""
    return {m.group(1).strip(): m.group(2).strip() for m in re.finditer(r"│ ([^│]+?)\s+│ ([^│]+?)\s+│", out)}


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A folder as a disc might hold it: nested DICOM, a viewer program, a zip, a link out."""
    root = tmp_path / "disc"
    (root / "DICOM" / "A").mkdir(parents=True)
    shutil.copy(sample("CT_small.dcm"), root / "DICOM" / "A" / "IM0001")
    shutil.copy(sample("MR_small.dcm"), root / "DICOM" / "IM0002")
    (root / "VIEWER.EXE").write_bytes(b"MZ" + b"\0" * 500)
    (root / "README.TXT").write_text("Open VIEWER.EXE to see your images")
    with zipfile.ZipFile(root / "more.zip", "w") as zf:
        zf.write(sample("JPEG2000.dcm"), "nested/IM0003")
        zf.writestr("notes.txt", "not dicom")
    outside = tmp_path / "secret.dcm"
    shutil.copy(sample("rtplan.dcm"), outside)
    (root / "link.dcm").symlink_to(outside)
    return root


def test_import_folder_reports_each_bucket(tmp_path: Path, media: Path) -> None:
    data = tmp_path / "data"
    result = run_cli("import", str(media), "--data-dir", str(data), "--show-skipped")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = summary(out)
    assert rows["stored"] == "3" and rows["already present"] == "0" and rows["refused"] == "0"
    assert rows["skipped (not DICOM or unreadable)"] == "4"
    assert "VIEWER.EXE: not a DICOM file" in out
    assert "notes.txt: not a DICOM file" in out
    assert "link.dcm: symbolic link pointing outside the folder" in out
    assert "Traceback" not in result.stderr


def test_import_again_changes_nothing(tmp_path: Path, media: Path) -> None:
    data = tmp_path / "data"
    run_cli("import", str(media), "--data-dir", str(data))
    blobs = sorted((data / "blobs").rglob("*.dcm"))
    again = run_cli("import", str(media), "--data-dir", str(data))
    assert again.returncode == 0
    assert (
        "already present │ 3" in again.stdout.replace("  ", " ").replace("  ", " ") or "│ 3" in again.stdout
    )
    assert sorted((data / "blobs").rglob("*.dcm")) == blobs


def test_import_of_a_missing_path_says_so(tmp_path: Path) -> None:
    result = run_cli("import", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "data"), "--show-skipped")
    assert "no such file or folder" in result.stdout
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(
        "import",
        str(tmp_path),
        "--data-dir",
        str(tmp_path / "d"),
        "--database-url",
        "postgresql://nobody@127.0.0.1:1/x",
    )
    assert result.returncode == 2
    assert "cannot open the index" in result.stderr
    assert "Traceback" not in result.stderr
