"""WADO-RS bulk data: every BulkDataURI in the metadata resolves, with Range on single parts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from tests.dicomweb.conftest import renamed, store

SAMPLES = [
    "CT_small.dcm",
    "examples_ybr_color.dcm",  # encapsulated: a multipart of frames
    "examples_overlay.dcm",  # overlay data
    "examples_palette.dcm",  # palette lookup tables
    "waveform_ecg.dcm",  # waveform data inside a sequence
    "MR_small_bigendian.dcm",  # words swapped to little endian
    "liver.dcm",  # bit-packed
    "image_dfl.dcm",  # deflated
    "rtdose.dcm",  # implicit VR
    "emri_small_RLE.dcm",
]
_WORDS = {"OW": 2, "US": 2, "SS": 2, "OF": 4, "FL": 4, "OL": 4, "UL": 4, "SL": 4, "OD": 8, "FD": 8}


@pytest.fixture(scope="module")
def stored(module_url: str) -> dict[str, pydicom.Dataset]:
    datasets = {name: renamed(name) for name in SAMPLES}
    store(module_url, list(datasets.values()))
    return datasets


def _uris(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "BulkDataURI" in node:
            yield node["BulkDataURI"]
        for value in node.values():
            yield from _uris(value)
    elif isinstance(node, list):
        for item in node:
            yield from _uris(item)


def _element(ds: pydicom.Dataset, path: str) -> pydicom.DataElement:
    items = path.split(".")
    current = ds
    for tag, index in zip(items[0:-1:2], items[1::2], strict=True):
        current = current[int(tag, 16)].value[int(index)]
    return current[int(items[-1], 16)]


def _expected(ds: pydicom.Dataset, elem: pydicom.DataElement) -> bytes:
    value = elem.value
    size = _WORDS.get(elem.VR, 1)
    if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2" and size > 1:
        return np.frombuffer(value, f">u{size}").astype(f"<u{size}").tobytes()
    return bytes(value)


@pytest.mark.parametrize("name", SAMPLES)
def test_every_bulkdata_uri_resolves(module_url: str, stored: dict[str, pydicom.Dataset], name: str) -> None:
    ds = stored[name]
    client = DICOMwebClient(module_url)
    metadata = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    uris = list(_uris(metadata))
    assert uris, "the sample should have bulk data"
    instance = _pixel_url(module_url, ds, "")
    for uri in uris:
        # dicomweb-client sends "Host: 127.0.0.1" without the port, so the URIs it sees lack it.
        path = uri.rsplit("/bulkdata/", 1)[1]
        assert instance.endswith(uri.split("/dicomweb/", 1)[1].removesuffix(path))
        uri = instance + path
        elem = _element(ds, path)
        got = client.retrieve_bulkdata(uri)
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        if path == "7FE00010" and syntax.is_compressed and not syntax.is_deflated:
            count = int(ds.get("NumberOfFrames", 1))
            assert got == list(generate_frames(ds.PixelData, number_of_frames=count))
            continue
        (data,) = got
        expected = _expected(ds, elem)
        assert data == expected[: len(data)] and len(expected) - len(data) <= 1, uri


def _pixel_url(base: str, ds: pydicom.Dataset, path: str = "7FE00010") -> str:
    return (
        f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/bulkdata/{path}"
    )


def test_single_part_and_ranges(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["CT_small.dcm"]
    url = _pixel_url(module_url, ds)
    octet = {"Accept": "application/octet-stream"}
    whole = httpx.get(url, headers=octet)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/octet-stream"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.content == ds.PixelData
    size = len(ds.PixelData)
    cases = {
        "bytes=0-99": (0, 100),
        "bytes=100-": (100, size),
        "bytes=-10": (size - 10, size),
        f"bytes=10-{size + 500}": (10, size),
    }
    for header, (start, stop) in cases.items():
        part = httpx.get(url, headers={**octet, "Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert part.content == ds.PixelData[start:stop]
    for header in (f"bytes={size}-", "bytes=-0", "bytes=50-10"):
        refused = httpx.get(url, headers={**octet, "Range": header})
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
    assert httpx.get(url, headers={**octet, "Range": "lines=1-2"}).status_code == 200


def test_bad_paths(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    ds = stored["waveform_ecg.dcm"]
    for path, status in (
        ("zz", 400),
        ("7FE0001", 400),
        ("54000100.x.54001010", 400),
        ("54000100.9.54001010", 404),
    ):
        response = httpx.get(_pixel_url(module_url, ds, path))
        assert response.status_code == status, path
        assert response.json()["error"]
    assert httpx.get(_pixel_url(module_url, ds, "00091001")).status_code == 404


def test_etag_304_head_and_406(module_url: str, stored: dict[str, pydicom.Dataset]) -> None:
    url = _pixel_url(module_url, stored["examples_overlay.dcm"], "60003000")
    first = httpx.get(url)
    assert first.status_code == 200
    assert httpx.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == first.headers["content-length"]
    assert httpx.get(url, headers={"Accept": "image/png"}).status_code == 406
    frames = _pixel_url(module_url, stored["examples_ybr_color.dcm"])
    jpeg = httpx.get(frames, headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert jpeg.status_code == 200
    assert jpeg.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
