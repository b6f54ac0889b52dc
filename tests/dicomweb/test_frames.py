"""WADO-RS frames (PS3.18 §10.4.1.1.3) against a real server, with dicomweb-client where it has the call."""

from __future__ import annotations

import warnings

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from tests.dicomweb.conftest import renamed, store

MULTI_FRAME = [
    "examples_ybr_color.dcm",  # JPEG Baseline, 30 frames, YBR_FULL_422
    "emri_small.dcm",  # native, 10 frames, 16 bit
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "SC_rgb_2frame.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_expb_32bit_2frame.dcm",
    "rtdose.dcm",  # implicit VR, 32 bit, 15 frames
    "rtdose_expb.dcm",
    "liver.dcm",  # 1 bit, bit-packed, no frame index
]
SINGLE_FRAME = ["CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "image_dfl.dcm", "JPEG-lossy.dcm"]
NO_PIXELS = "reportsi.dcm"


@pytest.fixture(scope="module")
def stored(module_url: str) -> dict[str, pydicom.Dataset]:
    datasets = {name: renamed(name) for name in [*MULTI_FRAME, *SINGLE_FRAME, NO_PIXELS]}
    store(module_url, list(datasets.values()))
    return datasets


def _url(base: str, ds: pydicom.Dataset, frames: str) -> str:
    return f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/{frames}"


def _expected(ds: pydicom.Dataset, number: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixel_array(ds, index=number - 1)


def _decodable(ds: pydicom.Dataset) -> bool:
    try:
        _expected(ds, 1)
    except Exception:
        return False
    return True


def _as_array(data: bytes, ds: pydicom.Dataset) -> np.ndarray:
    """Native little endian frame bytes shaped like pydicom's decode of that frame."""
    expected = _expected(ds, 1)
    if int(ds.BitsAllocated) == 1:
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return bits[: expected.size].reshape(expected.shape)
    return np.frombuffer(data, expected.dtype.newbyteorder("<")).reshape(expected.shape)


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = response.content.split(b"--" + boundary.encode())[1:-1]
    parts = []
    for chunk in chunks:
        head, _, body = chunk.partition(b"\r\n\r\n")
        content_type = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-type")
        )
        parts.append((content_type, body[:-2]))
    return parts


@pytest.mark.parametrize("name", MULTI_FRAME + SINGLE_FRAME)
def test_uncompressed_frames_equal_pydicom_decode(
    module_url: str, stored: dict[str, pydicom.Dataset], name: str
) -> None:
    """``type=application/octet-stream`` without transfer-syntax: native little endian pixels."""
    ds = stored[name]
    count = int(ds.get("NumberOfFrames", 1) or 1)
    numbers = sorted({1, count, (count + 1) // 2})
    if not _decodable(ds):
        accept = 'multipart/related; type="application/octet-stream"'
        response = httpx.get(_url(module_url, ds, "1"), headers={"Accept": accept})
        assert response.status_code == 406
        assert "cannot be decoded" in response.json()["error"]
        return
    client = DICOMwebClient(module_url)
    got = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        numbers,
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert len(got) == len(numbers)
    for number, data in zip(numbers, got, strict=True):
        np.testing.assert_array_equal(_as_array(data, ds), _expected(ds, number))


@pytest.mark.parametrize("name", MULTI_FRAME + SINGLE_FRAME)
def test_default_accept_of_dicomweb_client(
    module_url: str, stored: dict[str, pydicom.Dataset], name: str
) -> None:
    """dicomweb-client's default ``multipart/related; type="*/*"`` gets the frames as stored."""
    ds = stored[name]
    got = DICOMwebClient(module_url).retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1]
    )
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax.is_compressed and not syntax.is_deflated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fragments = list(
                pydicom.encaps.generate_frames(
                    ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))
                )
            )
        assert got == [fragments[0]]
    elif _decodable(ds):
        np.testing.assert_array_equal(_as_array(got[0], ds), _expected(ds, 1))


def test_ohif_accept_sends_stored_jpeg(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["examples_ybr_color.dcm"]
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    response = httpx.get(_url(module_url, ds, "2,30"), headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith('multipart/related; type="application/octet-stream"')
    parts = _parts(response)
    assert [p[0] for p in parts] == ["application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"] * 2
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=30))
    assert [p[1] for p in parts] == [frames[1], frames[29]]


def test_image_jpeg_accept(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["examples_ybr_color.dcm"]
    response = httpx.get(
        _url(module_url, ds, "5"), headers={"Accept": 'multipart/related; type="image/jpeg"'}
    )
    assert response.status_code == 200
    ((content_type, body),) = _parts(response)
    assert content_type == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert body.startswith(b"\xff\xd8")


def test_image_jpeg_on_uncompressed_frames_is_406(
    module_url: str, stored: dict[str, pydicom.Dataset]
) -> None:
    ds = stored["emri_small.dcm"]
    response = httpx.get(
        _url(module_url, ds, "1"), headers={"Accept": 'multipart/related; type="image/jpeg"'}
    )
    assert response.status_code == 406
    assert "application/octet-stream" in response.json()["error"]


def test_q_values_and_several_ranges(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["emri_small_RLE.dcm"]
    accept = (
        'multipart/related; type="image/jpeg"; q=1, '
        'multipart/related; type="application/octet-stream"; q=0.5, '
        'multipart/related; type="image/x-dicom-rle"; q=0.9'
    )
    response = httpx.get(_url(module_url, ds, "3"), headers={"Accept": accept})
    assert response.status_code == 200
    assert _parts(response)[0][0] == "image/x-dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"


def test_star_star_and_single_part(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["emri_small.dcm"]
    response = httpx.get(_url(module_url, ds, "4"), headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("multipart/related")
    single = httpx.get(_url(module_url, ds, "4"), headers={"Accept": "application/octet-stream"})
    assert single.status_code == 200
    assert single.headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert single.content == _parts(response)[0][1]


@pytest.mark.parametrize(
    ("frames", "status"), [("0", 400), ("a", 400), ("1,,2", 400), ("-1", 400), ("11", 404), ("1,99", 404)]
)
def test_bad_frame_lists(
    module_url: str, stored: dict[str, pydicom.Dataset], frames: str, status: int
) -> None:
    response = httpx.get(_url(module_url, stored["emri_small.dcm"], frames))
    assert response.status_code == status
    assert response.json()["status"] == status
    if status == 404:
        assert "has 10 frames" in response.json()["error"]


def test_no_pixel_data_and_unknown_instance(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    response = httpx.get(_url(module_url, stored[NO_PIXELS], "1"))
    assert response.status_code == 404
    assert "no pixel data" in response.json()["error"]
    ds = stored["emri_small.dcm"]
    unknown = (
        f"{module_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/1.2.3/frames/1"
    )
    assert httpx.get(unknown).status_code == 404


def test_unsupported_transfer_syntax_is_406(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["examples_ybr_color.dcm"]
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90"
    response = httpx.get(_url(module_url, ds, "1"), headers={"Accept": accept})
    assert response.status_code == 406
    assert "JPEG Baseline" in response.json()["error"]


def test_etag_304_and_head(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    url = _url(module_url, stored["examples_ybr_color.dcm"], "1,2")
    first = httpx.get(url)
    etag = first.headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.headers["etag"] == etag
    assert head.headers["content-type"].startswith("multipart/related")
    assert head.content == b""
    other = httpx.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert other.headers["etag"] != etag
