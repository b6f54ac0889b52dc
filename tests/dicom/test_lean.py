"""The lean walk gives exactly what the pydicom path gives, and steps aside when it cannot.

``parse_file`` reads the common file with :mod:`imagebridge.dicom.lean` and every other one with
pydicom. Every sample file (pydicom's test files and pydicom-data) and a set of files built here to
reach each branch (sequences nested and of undefined length, person names with component groups,
deferred and inline binary values, encapsulated frames, elements after the pixel data) is parsed
both ways, and the two ParsedInstances, metadata JSON included, must be equal."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from imagebridge.cli.samples import sample_dirs
from imagebridge.dicom import lean, parse, tags
from tests.factory import make_instance, part10


def _both(path: Path) -> tuple[object, object]:
    outcomes = []
    for reader in (parse.parse_with_pydicom, parse.parse_file):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                parsed = reader(path)
                levels = (parsed.patient_json, parsed.study_json, parsed.series_json)
                outcomes.append(parsed if levels == _levels(parsed) else "level JSON differs")
            except Exception as exc:  # both paths must refuse alike
                outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes[0], outcomes[1]


def _levels(parsed: parse.ParsedInstance) -> tuple[str, ...]:
    """The level JSON made from the metadata JSON itself (as the index once stored it eagerly)."""
    metadata = json.loads(parsed.metadata_json)
    return tuple(
        json.dumps(
            {k: v for k, v in metadata.items() if k in {tags.tag_key(t) for t in wanted}},
            separators=(",", ":"),
        )
        for wanted in (tags.PATIENT_TAGS, tags.STUDY_TAGS, tags.SERIES_TAGS)
    )


def _walks(path: Path) -> bool:
    return lean.walk(path, parse.DEFER_SIZE, 1024) is not None


def test_the_lean_walk_equals_pydicom_on_every_sample_file() -> None:
    files = [p for folder in sample_dirs() for p in sorted(folder.rglob("*")) if p.is_file()]
    assert len(files) > 100, "pydicom's test files and pydicom-data should both be installed"
    different = [p.name for p in files if (lambda pair: pair[0] != pair[1])(_both(p))]
    walked = [p for p in files if _walks(p)]
    assert different == []
    assert len(walked) > 100, "the lean walk should read most sample files itself"


def _write(tmp_path: Path, ds: Dataset, name: str = "x.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(part10(ds))
    return path


def _item(**attrs: object) -> Dataset:
    item = Dataset()
    for keyword, value in attrs.items():
        setattr(item, keyword, value)
    return item


BUILT = {
    "person names": {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientName": "Yamada^Tarou=山田^太郎",  # not ASCII: pydicom's path
        "ReferringPhysicianName": "Doe^John=Doe^J==",
        "PerformingPhysicianName": ["A^B", "C^D=E"],
        "OperatorsName": "",
    },
    "ascii person names": {
        "PatientName": "Doe^Jane=^Jane=Phon",
        "ReferringPhysicianName": "Doe^John=Doe^J==",
        "PerformingPhysicianName": ["A^B", "C^D=E"],
        "OperatorsName": "",
    },
    "sequences": {
        "ReferencedImageSequence": Sequence(
            [
                _item(ReferencedSOPClassUID="1.2.3", ReferencedSOPInstanceUID="1.2.3.4"),
                _item(
                    ReferencedSOPClassUID="1.2.3",
                    ReferencedSOPInstanceUID="1.2.3.5",
                    PurposeOfReferenceCodeSequence=Sequence(
                        [_item(CodeValue="121311", CodeMeaning="Localizer")]
                    ),
                ),
            ]
        ),
        "ProcedureCodeSequence": Sequence([]),
    },
    "binary values": {
        "RedPaletteColorLookupTableData": b"\x01\x02" * 8,  # inline
        "SegmentedRedPaletteColorLookupTableData": b"\x00\x01" * 700,  # above the threshold
        "TextValue": "x" * (parse.DEFER_SIZE + 2),  # deferred by size (UT)
        "FrameIncrementPointer": None,
    },
    "numbers and strings": {
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "PixelSpacing": ["0.5", "0.5"],
        "WindowCenter": ["40", "400"],
        "SliceThickness": "1.25",
        "AcquisitionNumber": "3",
        "StudyDescription": "  lead kept",
        "NumberOfFrames": "1",
        "ReferencePixelX0": -5,
    },
}


@pytest.mark.parametrize("case", sorted(BUILT))
def test_the_lean_walk_equals_pydicom_on_built_files(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path, make_instance(**BUILT[case]))
    slow, fast = _both(path)
    assert isinstance(slow, parse.ParsedInstance)
    assert slow == fast
    assert _walks(path) == (case != "person names")


def test_a_sequence_of_undefined_length_and_elements_after_the_pixel_data(tmp_path: Path) -> None:
    ds = make_instance(ReferencedImageSequence=Sequence([_item(ReferencedSOPInstanceUID="1.2.3.4")]))
    ds.ReferencedImageSequence.is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    ds.DataSetTrailingPadding = b"\x00" * 16
    path = _write(tmp_path, ds)
    slow, fast = _both(path)
    assert _walks(path)
    assert slow == fast


@pytest.mark.parametrize("frames", [1, 3])
def test_encapsulated_frames_are_located_as_pydicom_locates_them(tmp_path: Path, frames: int) -> None:
    ds = make_instance(NumberOfFrames=str(frames), BitsAllocated=8, BitsStored=8, HighBit=7)
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes([n]) * 10 + b"\xff\xd9" for n in range(frames)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    path = _write(tmp_path, ds)
    slow, fast = _both(path)
    assert _walks(path)
    assert slow == fast
    assert isinstance(fast, parse.ParsedInstance) and fast.frame_index is not None
    assert fast.frame_index.count == frames


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian], ids=str
)
def test_other_encodings_are_left_to_pydicom(tmp_path: Path, syntax: str) -> None:
    ds = make_instance()
    ds.file_meta.TransferSyntaxUID = syntax
    path = _write(tmp_path, ds)
    assert not _walks(path)
    slow, fast = _both(path)
    assert isinstance(fast, parse.ParsedInstance) and slow == fast


def test_unsupported_values_and_damaged_files_fall_back(tmp_path: Path) -> None:
    un = make_instance()
    un.add_new(0x00091010, "UN", b"abcd")
    at = make_instance(FrameIncrementPointer=0x00181063)
    sources = {"un": part10(un), "at": part10(at)}
    whole = part10(make_instance(pixels=64))
    sources["truncated"] = whole[: len(whole) - 100]
    sources["cut in the header"] = whole[:300]
    sources["not dicom"] = b"hello" * 50
    swapped = bytearray(part10(make_instance(StudyDescription="B", SeriesDescription="A")))
    sources["out of order"] = bytes(swapped).replace(b"\x08\x00\x30\x10", b"\x08\x00\x3f\x10", 1)
    for name, data in sources.items():
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(data)
        assert not _walks(path), name
        slow, fast = _both(path)
        assert slow == fast, name


def test_missing_uids_are_refused_with_pydicom_s_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, make_instance(SeriesInstanceUID=None))
    slow, fast = _both(path)
    assert isinstance(fast, str) and "SeriesInstanceUID" in fast
    assert slow == fast


def test_native_frames_of_a_multi_frame_instance(tmp_path: Path) -> None:
    ds = make_instance(pixels=8, NumberOfFrames="4")
    ds.PixelData = struct.pack("<256H", *range(256))
    path = _write(tmp_path, ds)
    slow, fast = _both(path)
    assert _walks(path) and slow == fast
    assert isinstance(fast, parse.ParsedInstance) and fast.frame_index is not None
    assert fast.frame_index.locate(2)[0].length == 128


def test_rle_pixel_data_walks_too(tmp_path: Path) -> None:
    ds = make_instance()
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    path = _write(tmp_path, ds)
    slow, fast = _both(path)
    assert _walks(path) and slow == fast


@pytest.mark.parametrize("kept", [0, 140, 600, 64 * 1024])
def test_the_bytes_still_in_memory_read_as_the_file_does(tmp_path: Path, kept: int) -> None:
    """STOW-RS hands ingest the first bytes it received; what the walk needs beyond them it reads
    from the file, so any length of head gives the same instance."""
    plain = make_instance(**BUILT["sequences"])
    frames = make_instance(NumberOfFrames="2", BitsAllocated=8, BitsStored=8, HighBit=7)
    frames.PixelData = encapsulate([b"\xff\xd8" + bytes([n]) * 10 + b"\xff\xd9" for n in range(2)])
    frames["PixelData"].VR = "OB"
    frames.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    for name, ds in {"plain": plain, "frames": frames}.items():
        path = _write(tmp_path, ds, f"{name}.dcm")
        data = path.read_bytes()
        from_head = parse.parse_file(path, head=data[:kept], size=len(data))
        assert from_head == parse.parse_with_pydicom(path), name


def test_a_whole_head_needs_no_file(tmp_path: Path) -> None:
    path = _write(tmp_path, make_instance(**BUILT["sequences"]))
    data = path.read_bytes()
    path.unlink()
    walked = lean.walk(path, parse.DEFER_SIZE, 1024, head=data, size=len(data))
    assert walked is not None and walked.pixel is not None
