"""The table-lookup fast path of rendering gives exactly what the per-pixel arithmetic gives."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from imagebridge.dicom import render
from imagebridge.dicom.greyscale import Greyscale
from tests.samples import sample


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
@pytest.mark.parametrize(
    "window",
    [
        None,
        render.Window(40, 400, "linear"),
        render.Window(300, 1, "linear"),
        render.Window(50, 350, "sigmoid"),
        render.Window(-20, 700, "linear_exact"),
    ],
)
def test_lookup_table_matches_arithmetic(name: str, window: render.Window | None) -> None:
    ds = pydicom.dcmread(sample(name))
    array = ds.pixel_array
    expected_window = window or render._instance_window(Greyscale.of(ds))
    if expected_window is None:
        expected_window = render.Window(float(array.mean()), float(np.ptp(array) or 1), "linear")
        window = expected_window
    expected = render.apply_window(render.apply_modality_lut(array, ds).astype(np.float64), expected_window)
    assert render._lookup_table(array, Greyscale.of(ds), expected_window) is not None
    assert np.array_equal(render.display(array, ds, window), expected)
