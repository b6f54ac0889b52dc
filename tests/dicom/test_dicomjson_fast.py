"""The raw-value fast path of the DICOM JSON walk gives exactly what the pydicom path gives.

Every file under pydicom's test files and pydicom-data (explicit and implicit VR, big endian,
character sets from Latin-1 to ISO 2022 Japanese, private tags, odd lengths, deferred values) is
walked twice, with and without the fast path, and the JSON must be identical."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from imagebridge.cli.samples import sample_dirs
from imagebridge.dicom import dicomjson
from imagebridge.dicom.parse import DEFER_SIZE, read_stored


def _all_files() -> list[Path]:
    files: list[Path] = []
    for folder in sample_dirs():
        files += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    return files


def _walk(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read_stored(path, defer_size=DEFER_SIZE)
        except Exception:
            return None
        with monkeypatch.context() as patched:
            if not fast:
                patched.setattr(dicomjson, "_raw_json", lambda raw: None)
            try:
                out = dicomjson.dataset_to_json(ds, lambda p: "ibx:" + p, 1024)
            except Exception as exc:  # both paths must then fail alike
                return f"error: {type(exc).__name__}"
    return json.dumps(out, sort_keys=True, default=str)


def test_fast_path_equals_pydicom_on_every_sample_file(monkeypatch: pytest.MonkeyPatch) -> None:
    files = _all_files()
    assert len(files) > 100, "pydicom's test files and pydicom-data should both be installed"
    compared, different = 0, []
    for path in files:
        slow = _walk(path, False, monkeypatch)
        if slow is None:
            continue
        compared += 1
        if _walk(path, True, monkeypatch) != slow:
            different.append(path.name)
    assert compared > 100
    assert different == []


def _raw(tag: int, vr: str | None, value: bytes, little: bool = True) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little)


@pytest.mark.parametrize(
    ("vr", "value", "expected"),
    [
        ("CS", b"ORIGINAL\\PRIMARY\\AXIAL ", ["ORIGINAL", "PRIMARY", "AXIAL"]),
        ("CS", b"  ", None),
        ("CS", b"A\\", ["A", ""]),
        ("UI", b"1.2.3\x00", ["1.2.3"]),
        ("AE", b" STORESCP ", ["STORESCP"]),
        ("LO", b" lead kept \x00", [" lead kept"]),
        ("LT", b"one\\two  ", ["one\\two"]),
        ("US", struct.pack("<3H", 1, 2, 65535), [1, 2, 65535]),
        ("SS", struct.pack("<h", -5), [-5]),
        ("FD", struct.pack("<d", 0.5), [0.5]),
        ("DS", b" 0.5\\-2\\1e3 ", [0.5, -2.0, 1000.0]),
        ("IS", b"12\\-3 ", [12, -3]),
        ("IS", b" ", None),
    ],
)
def test_fast_path_values(vr: str, value: bytes, expected: list[object] | None) -> None:
    out = dicomjson._raw_json(_raw(0x00080008, vr, value))
    assert out == ({"vr": vr, "Value": expected} if expected is not None else {"vr": vr})


def test_big_endian_numbers_and_what_is_left_to_pydicom() -> None:
    assert dicomjson._raw_json(_raw(0x00280010, "US", struct.pack(">H", 512), little=False)) == {
        "vr": "US",
        "Value": [512],
    }
    assert dicomjson._raw_json(_raw(0x00280010, "US", b"\x01")) is None  # odd length
    assert dicomjson._raw_json(_raw(0x00100010, "PN", b"DOE^JOHN")) is None
    assert dicomjson._raw_json(_raw(0x00280030, "DS", b"0.5\\")) is None  # an empty value
    assert dicomjson._raw_json(_raw(0x00200013, "IS", b"1A")) is None
    assert dicomjson._raw_json(_raw(0x00100020, "LO", "é".encode("latin-1"))) is None
    assert dicomjson._raw_json(_raw(0x00100020, "LO", b"\x1b$B")) is None
    assert dicomjson._raw_json(_raw(0x00091001, None, b"x")) is None  # implicit private
    assert dicomjson._raw_json(_raw(0x00100020, None, b"ID1 ")) == {"vr": "LO", "Value": ["ID1"]}
