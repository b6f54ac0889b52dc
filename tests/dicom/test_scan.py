"""The top-level walk finds what pydicom finds, steps over every kind of sequence, and refuses
bytes it cannot read instead of guessing."""

from __future__ import annotations

import io
import struct
import warnings

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from imagebridge.cli.samples import sample_dirs
from imagebridge.dicom import scan

LITTLE_ENDIAN = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)


def _encoded(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _with_sequences() -> Dataset:
    item = Dataset()
    item.CodeValue = "T-D0050"
    item.ConceptCodeSequence = Sequence([Dataset()])
    ds = Dataset()
    ds.PatientName = "Sequence^Test"
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.Rows = 7
    ds.WindowCenter = "40"
    return ds


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("undefined", [False, True])
def test_sequences_are_stepped_over(implicit: bool, undefined: bool) -> None:
    ds = _with_sequences()
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
            for item in elem.value:
                item.is_undefined_length_sequence_item = undefined
    data = _encoded(ds, implicit)
    found = scan.elements(data, 0, implicit, last_group=0x0028)
    assert list(found) == [0x00081140, 0x00100010, 0x00280010, 0x00281050]
    vr, length, offset = found[0x00280010]
    assert struct.unpack_from("<H", data, offset)[0] == 7 and length == 2
    assert vr == (None if implicit else "US")
    assert data[found[0x00281050][2] :].startswith(b"40")


def test_walk_stops_after_the_last_group() -> None:
    ds = _with_sequences()
    ds.PixelData = b"\0" * 98
    ds.PixelRepresentation, ds.BitsAllocated = 0, 8
    ds.PixelPaddingValue = 0  # (0028,0120): still group 0028
    found = scan.elements(_encoded(ds, False), 0, False, last_group=0x0028)
    assert 0x00280120 in found and 0x7FE00010 not in found


def test_unknown_vr_with_undefined_length_holds_implicit_items() -> None:
    """PS3.5 §6.2.2: an UN value of undefined length is a sequence encoded in implicit VR."""
    inner = _encoded(_with_sequences(), True)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
    un = struct.pack("<HH2sHL", 0x0009, 0x1010, b"UN", 0, scan.UNDEFINED) + item
    un += struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    rows = struct.pack("<HH2sHH", 0x0028, 0x0010, b"US", 2, 9)
    found = scan.elements(un + rows, 0, False, last_group=0x0028)
    assert list(found) == [0x00091010, 0x00280010]


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("<HH2sH", 0x0028, 0x0010, b"US", 200) + b"\0\0",  # value runs past the end
        struct.pack("<HH2sH", 0x0028, 0x0010, b"\x01\x02", 2) + b"\0\0",  # no VR
        struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, scan.UNDEFINED) + b"\x08\x00",  # cut short
        struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, scan.UNDEFINED)
        + struct.pack("<HHL", 0x0010, 0x0010, 0),  # an element where an item belongs
    ],
)
def test_unreadable_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(scan.Unreadable):
        scan.elements(data, 0, False, last_group=0x0028)


def test_every_sample_gives_the_top_level_pydicom_reads() -> None:
    checked = 0
    for path in sorted({p for d in sample_dirs() for p in d.rglob("*.dcm")}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue  # not DICOM at all
        syntax = ds.file_meta.get("TransferSyntaxUID")
        data = path.read_bytes()
        if syntax not in LITTLE_ENDIAN or data[128:136] != b"DICM\x02\x00\x00\x00":
            continue
        start = 132 + 12 + struct.unpack_from("<L", data, 140)[0]
        found = scan.elements(data, start, syntax.is_implicit_VR, last_group=0x0028)
        tags = list(ds.keys())
        expected = [int(tag) for tag in tags if tag.group <= 0x0028]
        assert list(found) == expected, path.name
        with io.BytesIO(data) as fp:
            for tag, (_, length, offset) in found.items():
                raw = ds.get_item(tag)
                if isinstance(raw, RawDataElement) and length != scan.UNDEFINED:
                    fp.seek(offset)
                    assert fp.read(length) == raw.value, (path.name, hex(tag))
        checked += 1
    assert checked > 50


def test_sequences_nested_beyond_reason_are_refused() -> None:
    start = struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, scan.UNDEFINED) + struct.pack(
        "<HHL", 0xFFFE, 0xE000, scan.UNDEFINED
    )
    with pytest.raises(scan.Unreadable):
        scan.elements(start * 5000, 0, False, last_group=0x0028)
