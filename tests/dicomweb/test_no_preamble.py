"""Instances received without the 128-byte preamble and 'DICM' (as dicomweb-client writes them)
are stored as received and every WADO-RS reader still serves them."""

from __future__ import annotations

import io

import httpx
import pydicom
from PIL import Image

from tests.samples import sample


def _without_preamble(name: str) -> tuple[pydicom.Dataset, bytes]:
    ds = pydicom.dcmread(sample(name))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()[132:]
    assert data[:2] == b"\x02\x00"
    return ds, data


def _store(url: str, data: bytes) -> None:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    response = httpx.post(
        f"{url}/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert response.status_code == 200, response.text


def test_every_reader_serves_an_instance_stored_without_preamble(dicomweb_url: str) -> None:
    ds, data = _without_preamble("JPEG2000.dcm")
    _store(dicomweb_url, data)
    instance = f"{dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"

    stored = httpx.get(
        instance, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert stored.status_code == 200 and data in stored.content

    decoded = httpx.get(instance, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert decoded.status_code == 200 and b"transfer-syntax=1.2.840.10008.1.2.1" in decoded.content

    frame = httpx.get(
        f"{instance}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert frame.status_code == 200
    assert len(frame.content) > ds.Rows * ds.Columns

    rendered = httpx.get(f"{instance}/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200
    assert Image.open(io.BytesIO(rendered.content)).size == (ds.Columns, ds.Rows)

    metadata = httpx.get(f"{instance}/metadata").json()[0]
    bulk = httpx.get(
        metadata["7FE00010"]["BulkDataURI"].replace("http://127.0.0.1/", dicomweb_url.split("dicomweb")[0])
    )
    assert bulk.status_code == 200
