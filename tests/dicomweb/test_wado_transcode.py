"""WADO-RS instance retrieval in other transfer syntaxes (PS3.18 §8.7.3.5), decided before any body byte."""

from __future__ import annotations

import io
import warnings

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from tests.dicomweb.conftest import renamed, store

SAMPLES = [
    "CT_small.dcm",
    "examples_ybr_color.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "liver.dcm",
    "reportsi.dcm",
]
RLE = "1.2.840.10008.1.2.5"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


@pytest.fixture(scope="module")
def stored(module_url: str) -> dict[str, pydicom.Dataset]:
    datasets = {name: renamed(name) for name in SAMPLES}
    store(module_url, list(datasets.values()))
    return datasets


def _pixels(ds: pydicom.Dataset) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def _retrieve(base: str, ds: pydicom.Dataset, accept: str | None) -> httpx.Response:
    url = f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    return httpx.get(url, headers={"Accept": accept} if accept else {})


@pytest.mark.parametrize("name", SAMPLES)
def test_default_is_explicit_vr_little_endian(
    module_url: str, stored: dict[str, pydicom.Dataset], name: str
) -> None:
    ds = stored[name]
    # dicomweb-client itself defaults to transfer-syntax=*; without the parameter PS3.18 means ELE.
    got = DICOMwebClient(module_url).retrieve_instance(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=("application/dicom",)
    )
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    if "PixelData" in ds:
        np.testing.assert_array_equal(_pixels(got), _pixels(ds))


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "examples_ybr_color.dcm", "emri_small_RLE.dcm", "image_dfl.dcm"]
)
def test_stored_bytes_with_any_syntax(module_url: str, stored: dict[str, pydicom.Dataset], name: str) -> None:
    ds = stored[name]
    sent = io.BytesIO()
    ds.save_as(sent)
    client = DICOMwebClient(module_url)
    got = client.retrieve_instance(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=(("application/dicom", "*"),),
    )
    again = io.BytesIO()
    got.save_as(again)
    assert again.getvalue() == sent.getvalue()


@pytest.mark.parametrize("syntax", [RLE, J2K_LOSSLESS, "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"])
@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "MR_small_bigendian.dcm"]
)
def test_explicit_syntax_is_honoured_losslessly(
    module_url: str, stored: dict[str, pydicom.Dataset], name: str, syntax: str
) -> None:
    ds = stored[name]
    response = _retrieve(
        module_url, ds, f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    )
    assert response.status_code == 200, response.text
    got = DICOMwebClient(module_url)._decode_multipart_message(_Fake(response), stream=False)  # type: ignore[arg-type]
    (part,) = list(got)
    result = pydicom.dcmread(io.BytesIO(part))
    assert result.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(_pixels(result), _pixels(ds))


class _Fake:
    """An httpx response dressed as the requests response dicomweb-client decodes."""

    def __init__(self, response: httpx.Response) -> None:
        self.headers = response.headers
        self.content = response.content

    def __enter__(self) -> _Fake:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    ("name", "accept", "reason"),
    [
        ("CT_small.dcm", "1.2.840.10008.1.2.4.50", "no encoder for JPEG Baseline"),
        ("CT_small.dcm", "1.2.840.10008.1.2.2", "Big Endian is retired"),
        ("CT_small.dcm", "1.2.3.4", "not a transfer syntax"),
        ("reportsi.dcm", RLE, "without pixel data"),
        ("liver.dcm", J2K_LOSSLESS, "cannot be encoded"),
    ],
)
def test_impossible_syntax_is_406_with_reason(
    module_url: str, stored: dict[str, pydicom.Dataset], name: str, accept: str, reason: str
) -> None:
    response = _retrieve(
        module_url, stored[name], f"multipart/related; type=application/dicom; transfer-syntax={accept}"
    )
    assert response.status_code == 406
    assert reason in response.json()["error"]


def test_fallback_range_and_study_level(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["reportsi.dcm"]
    accept = f"multipart/related; type=application/dicom; transfer-syntax={RLE}, multipart/related; type=application/dicom; transfer-syntax=*; q=0.5"
    response = _retrieve(module_url, ds, accept)
    assert response.status_code == 200
    assert (
        "transfer-syntax=1.2.840.10008.1.2.1" in response.text[:400]
        or ds.file_meta.TransferSyntaxUID in response.text[:400]
    )
    study = httpx.head(
        f"{module_url}/studies/{ds.StudyInstanceUID}", headers={"Accept": accept.split(",")[0]}
    )
    assert study.status_code == 406


def test_etag_and_head(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["emri_small_RLE.dcm"]
    first = _retrieve(module_url, ds, None)
    url = str(first.url)
    assert httpx.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    stored_form = httpx.get(
        url, headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"}
    )
    assert stored_form.headers["etag"] != first.headers["etag"]
