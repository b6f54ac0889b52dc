"""Greyscale frames read through the frame index render exactly as pydicom's decoder shows them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from imagebridge.dicom import greyscale, parse, pixels, render
from imagebridge.dicom.greyscale import Greyscale
from tests.dicomweb.conftest import sample_path as sample
from tests.factory import make_instance, part10

WINDOWS = [None, render.Window(40, 400), render.Window(100, 50, "sigmoid"), render.Window(0, 1)]


Frame = tuple[np.ndarray, Dataset | Greyscale]


def _both(path: Path, number: int) -> tuple[Frame, Frame | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some samples are deliberately odd (VR, UIDs)
        parsed = parse.parse_file(path)
        assert parsed.frame_index is not None
        decoded = pixels.decode_frame_and_header(path, number)
        implicit = parsed.transfer_syntax == ImplicitVRLittleEndian
        return decoded, greyscale.read_frame(path, number, parsed.frame_index, implicit)


def _assert_same(path: Path, number: int) -> None:
    (expected, header), stored = _both(path, number)
    assert stored is not None, f"{path.name} was not read through its frame index"
    array, stored_header = stored
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)
    for window in WINDOWS:
        shown = render.display(array, stored_header, window)
        np.testing.assert_array_equal(shown, render.display(expected, header, window))


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("CT_small.dcm", 1),  # signed, rescale, window
        ("MR_small_implicit.dcm", 1),
        ("emri_small.dcm", 10),  # multi-frame, 12 of 16 bits
        ("MR-SIEMENS-DICOM-WithOverlays.dcm", 1),
    ],
)
def test_stored_greyscale_matches_the_decoder(name: str, number: int) -> None:
    _assert_same(sample(name), number)


@pytest.mark.parametrize("signed", [0, 1])
def test_bits_above_bits_stored_are_ignored(tmp_path: Path, signed: int) -> None:
    """PS3.5 §8.1.1: garbage in the unused high bits changes nothing (as in pydicom)."""
    values = np.arange(-32, 32, dtype="<i2") if signed else np.arange(64, dtype="<u2")
    noisy = values.view("<u2") ^ np.uint16(0x5000 if signed else 0xA000)
    ds = make_instance(
        pixels=8,
        BitsStored=12,
        HighBit=11,
        PixelRepresentation=signed,
        PixelData=noisy.tobytes(),
        WindowCenter=0,
        WindowWidth=40,
        PhotometricInterpretation="MONOCHROME1",
    )
    path = tmp_path / "noisy.dcm"
    path.write_bytes(part10(ds))
    _assert_same(path, 1)


@pytest.mark.parametrize(
    "name", ["SC_rgb.dcm", "examples_palette.dcm", "rtdose_1frame.dcm", "mlut_18.dcm", "vlut_04.dcm"]
)
def test_colour_32_bit_and_lookup_tables_go_to_the_decoder(name: str) -> None:
    assert _both(sample(name), 1)[1] is None


def test_render_frame_through_the_index_gives_the_same_jpeg() -> None:
    path = sample("CT_small.dcm")
    parsed = parse.parse_file(path)
    options = render.RenderOptions()
    through_index = render.render_frame(path, 1, options, parsed.transfer_syntax, parsed.frame_index)
    assert through_index == render.render_frame(path, 1, options)


def test_a_file_cut_short_goes_to_the_decoder(tmp_path: Path) -> None:
    parsed = parse.parse_file(sample("CT_small.dcm"))
    assert parsed.frame_index is not None
    cut = tmp_path / "cut.dcm"
    (frame,) = parsed.frame_index.locate(1)
    cut.write_bytes(sample("CT_small.dcm").read_bytes()[: frame.offset + frame.length - 100])
    assert greyscale.read_frame(cut, 1, parsed.frame_index, implicit=False) is None
