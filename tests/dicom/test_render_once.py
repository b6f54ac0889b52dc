"""Rendering parses each file once: the decoder's header read gives every display attribute."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from imagebridge.dicom import pixels, render
from tests.dicomweb.conftest import sample_path as sample
from tests.factory import make_instance, part10

SAMPLES = [
    ("CT_small.dcm", 1),
    ("MR_small.dcm", 1),
    ("OBXXXX1A.dcm", 1),
    ("examples_palette.dcm", 1),
    ("SC_rgb.dcm", 1),
    ("SC_rgb_rle.dcm", 1),
    ("emri_small_RLE.dcm", 7),
    ("MR2_J2KR.dcm", 1),
    ("image_dfl.dcm", 1),
    ("liver.dcm", 2),
    ("MR_small_bigendian.dcm", 1),
]


def _windowed_monochrome1(tmp_path: Path) -> Path:
    """An instance whose display depends on group 0028 beyond Image Pixel: rescale, window,
    VOI LUT Function and MONOCHROME1."""
    ds = make_instance(
        pixels=32,
        PhotometricInterpretation="MONOCHROME1",
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=-500,
        WindowWidth=900,
        VOILUTFunction="SIGMOID",
    )
    path = tmp_path / "windowed.dcm"
    path.write_bytes(part10(ds))
    return path


def _expected(path: Path, number: int) -> np.ndarray:
    """What rendering showed before: the whole dataset read, then the frame decoded from it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(path)
        return render.display(pixel_array(full, index=number - 1), full, None)


@pytest.mark.parametrize(("name", "number"), SAMPLES)
def test_one_parse_shows_what_a_full_read_shows(name: str, number: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some samples are deliberately odd (VR, UIDs)
        array, header = pixels.decode_frame_and_header(sample(name), number)
    assert np.array_equal(render.display(array, header, None), _expected(sample(name), number))


def test_window_rescale_and_monochrome1_come_from_the_one_parse(tmp_path: Path) -> None:
    path = _windowed_monochrome1(tmp_path)
    array, header = pixels.decode_frame_and_header(path, 1)
    assert header.WindowCenter == -500 and header.RescaleSlope == 2
    assert np.array_equal(render.display(array, header, None), _expected(path, 1))


def test_render_frame_does_not_read_the_header_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def second_read(path: Path) -> None:
        raise AssertionError(f"{path.name} was parsed twice")

    monkeypatch.setattr(pixels, "read_header", second_read)
    for path in (sample("CT_small.dcm"), _windowed_monochrome1(tmp_path)):
        assert render.render_frame(path, 1, render.RenderOptions()).startswith(b"\xff\xd8")
