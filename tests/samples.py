"""Sample files for tests: pydicom's own, found locally, sorted into valid and broken."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pydicom

from imagebridge.cli.samples import sample_dirs


@functools.cache
def pydicom_dir() -> Path:
    return next(d for d in sample_dirs() if d.name == "test_files")


def sample(name: str) -> Path:
    path = pydicom_dir() / name
    assert path.is_file(), f"pydicom sample {name} not found"
    return path


@functools.cache
def valid_files() -> list[Path]:
    """Every pydicom sample that is a storable Part 10 instance, one per SOP Instance UID."""
    chosen: dict[str, Path] = {}
    for path in sorted(pydicom_dir().glob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
        if "TransferSyntaxUID" not in ds.file_meta:
            continue
        uids = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if all(uids) and path.read_bytes()[128:132] == b"DICM":
            chosen.setdefault(uids[2], path)
    return sorted(chosen.values())
