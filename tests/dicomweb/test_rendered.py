"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.4-5, §8.3.5.1) against a real server."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from imagebridge.dicom import render
from tests.dicomweb.conftest import renamed, store

IMAGES = [
    "CT_small.dcm",  # MONOCHROME2 with rescale
    "examples_ybr_color.dcm",  # JPEG YBR multi-frame
    "examples_palette.dcm",  # PALETTE COLOR
    "examples_rgb_color.dcm",
    "liver.dcm",  # 1 bit
    "emri_small_jpeg_2k_lossless.dcm",
    "MR_small_RLE.dcm",
    "rtdose_expb.dcm",  # big endian, 32 bit
    "MR2_J2KR.dcm",
    "RG1_UNCI.dcm",
    "US1_J2KR.dcm",
]
NON_IMAGES = ["reportsi.dcm", "waveform_ecg.dcm", "rtplan.dcm"]


@pytest.fixture(scope="module")
def stored(module_url: str) -> dict[str, pydicom.Dataset]:
    datasets = {name: renamed(name) for name in [*IMAGES, *NON_IMAGES]}
    store(module_url, list(datasets.values()))
    return datasets


def _instance(base: str, ds: pydicom.Dataset) -> str:
    return f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _image(response: httpx.Response, media_type: str = "image/jpeg") -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(response.content))
    assert image.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[media_type]
    return image


def _not_blank(image: Image.Image) -> None:
    assert np.asarray(image.convert("L")).std() > 1


@pytest.mark.parametrize("name", IMAGES)
def test_instance_rendered_jpeg_and_png(
    module_url: str, stored: dict[str, pydicom.Dataset], name: str
) -> None:
    ds = stored[name]
    url = _instance(module_url, ds)
    jpeg = _image(httpx.get(f"{url}/rendered"))
    assert jpeg.size == (ds.Columns, ds.Rows)
    _not_blank(jpeg)
    png = _image(httpx.get(f"{url}/rendered", headers={"Accept": "image/png"}), "image/png")
    assert png.size == (ds.Columns, ds.Rows)
    _not_blank(png)
    thumb = _image(httpx.get(f"{url}/thumbnail"))
    assert max(thumb.size) == 128


def test_dicomweb_client_rendered_with_viewport(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["CT_small.dcm"]
    data = DICOMwebClient(module_url).retrieve_instance_rendered(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=("image/jpeg",),
        params={"viewport": "64,32", "quality": "50"},
    )
    assert Image.open(io.BytesIO(data)).size == (32, 32)


def test_frame_level_renders_the_chosen_frame(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["examples_ybr_color.dcm"]
    url = _instance(module_url, ds)
    accept = {"Accept": "image/png"}
    first = np.asarray(_image(httpx.get(f"{url}/frames/1/rendered", headers=accept), "image/png"))
    last = np.asarray(_image(httpx.get(f"{url}/frames/30/rendered", headers=accept), "image/png"))
    instance = np.asarray(_image(httpx.get(f"{url}/rendered", headers=accept), "image/png"))
    np.testing.assert_array_equal(instance, first)
    np.testing.assert_array_equal(last, ds.pixel_array[29])
    several = httpx.get(f"{url}/frames/1,2/rendered")
    assert several.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    assert httpx.get(f"{url}/frames/31/rendered").status_code == 404
    assert httpx.get(f"{url}/frames/x/thumbnail").status_code == 400


def test_study_and_series_levels(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["MR2_J2KR.dcm"]
    for url in (
        f"{module_url}/studies/{ds.StudyInstanceUID}",
        f"{module_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
    ):
        _not_blank(_image(httpx.get(f"{url}/rendered")))
        assert max(_image(httpx.get(f"{url}/thumbnail", params={"viewport": "50,50"})).size) == 50
    sr = stored["reportsi.dcm"]
    response = httpx.get(f"{module_url}/studies/{sr.StudyInstanceUID}/rendered")
    assert response.status_code == 404
    assert "no instance with pixel data" in response.json()["error"]


@pytest.mark.parametrize("name", NON_IMAGES)
def test_non_images_are_406(module_url: str, stored: dict[str, pydicom.Dataset], name: str) -> None:
    for kind in ("rendered", "thumbnail"):
        response = httpx.get(f"{_instance(module_url, stored[name])}/{kind}")
        assert response.status_code == 406
        assert "no pixel data" in response.json()["error"]


def test_window_changes_the_picture(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    url = f"{_instance(module_url, stored['CT_small.dcm'])}/rendered"
    png = {"Accept": "image/png"}
    narrow = np.asarray(_image(httpx.get(url, params={"window": "40,80"}, headers=png), "image/png"))
    wide = np.asarray(
        _image(httpx.get(url, params={"window": "40,2000,linear_exact"}, headers=png), "image/png")
    )
    sigmoid = np.asarray(
        _image(httpx.get(url, params={"window": "40,400,SIGMOID"}, headers=png), "image/png")
    )
    assert (narrow == 255).mean() > (wide == 255).mean()
    assert not np.array_equal(narrow, sigmoid)


def test_window_matches_ps33_linear_formula() -> None:
    values = np.array([-1000.0, 0.0, 39.5, 40.0, 79.0, 80.0, 1000.0])
    out = render.apply_window(values, render.Window(40, 80))
    expected = np.clip(((values - 39.5) / 79 + 0.5), 0, 1) * 255
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint8))
    assert out[0] == 0 and out[-1] == 255


def test_monochrome1_is_inverted() -> None:
    header = pydicom.Dataset()
    header.PhotometricInterpretation = "MONOCHROME1"
    header.PixelRepresentation = 0
    header.BitsStored = 8
    shown = render.display(np.array([[0, 255]], np.uint8), header, None)
    assert shown.tolist() == [[255, 0]]


@pytest.mark.parametrize(
    "query",
    [
        {"window": "a,b"},
        {"window": "40"},
        {"window": "40,0"},
        {"window": "40,80,cubic"},
        {"viewport": "0,10"},
        {"viewport": "10"},
        {"quality": "0"},
        {"quality": "abc"},
    ],
)
def test_bad_parameters_are_400(
    module_url: str, stored: dict[str, pydicom.Dataset], query: dict[str, str]
) -> None:
    response = httpx.get(f"{_instance(module_url, stored['CT_small.dcm'])}/rendered", params=query)
    assert response.status_code == 400
    assert response.json()["error"]


def test_accept_negotiation_etag_and_head(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    url = f"{_instance(module_url, stored['CT_small.dcm'])}/rendered"
    assert httpx.get(url, headers={"Accept": "image/gif"}).status_code == 406
    assert (
        httpx.get(url, headers={"Accept": "image/gif, image/png;q=0.5"}).headers["content-type"]
        == "image/png"
    )
    assert httpx.get(url, headers={"Accept": "image/*"}).headers["content-type"] == "image/jpeg"
    first = httpx.get(url)
    assert httpx.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    head = httpx.head(url)
    assert (head.status_code, head.headers["content-type"], head.content) == (200, "image/jpeg", b"")
    assert head.headers["etag"] == first.headers["etag"]
    assert httpx.get(url, params={"quality": "20"}).headers["etag"] != first.headers["etag"]
