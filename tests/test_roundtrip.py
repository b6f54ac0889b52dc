"""Every valid pydicom sample makes the whole trip: store, search, retrieve, metadata, frames, rendered.

Stored once per backend (module scope); dicomweb-client is the client throughout. The samples are
posted as their bytes on disk (through the client's multipart POST), so that retrieval with
``transfer-syntax=*`` can be compared byte for byte with the file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from tests.dicomweb.conftest import module_archive, module_url
from tests.samples import valid_files

__all__ = ["module_archive", "module_url"]

FILES = valid_files()
_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ", "PN"}


@pytest.fixture(scope="module")
def client(module_url: str) -> DICOMwebClient:
    client = DICOMwebClient(module_url)
    answer = client._http_post_multipart_application_dicom(
        f"{module_url}/studies", [path.read_bytes() for path in FILES]
    )
    assert "FailedSOPSequence" not in answer, answer
    assert len(answer.ReferencedSOPSequence) == len(FILES)
    return client


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _decoded(path: Path) -> np.ndarray | None:
    """The first frame as pydicom decodes it from the file or, failing that, from the dataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in (path, _read(path)):
            try:
                return pydicom.pixels.pixel_array(source, index=0)
            except Exception:
                continue
    return None


_NUMBERS = {"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}


def _same(restored: pydicom.DataElement, original: pydicom.DataElement) -> bool:
    """DICOM JSON carries DS and IS as numbers (PS3.18 §F.2.3), so compare those numerically."""
    if original.VR in _NUMBERS:
        as_list = [original.value] if original.VM == 1 else list(original.value)
        again = [restored.value] if restored.VM == 1 else list(restored.value)
        return np.allclose(np.array(again, float), np.array(as_list, float))
    return str(restored.value) == str(original.value)


def _single_part(response: httpx.Response) -> bytes:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    (part,) = response.content.split(b"--" + boundary.encode())[1:-1]
    return part.partition(b"\r\n\r\n")[2][:-2]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_round_trip(module_url: str, client: DICOMwebClient, path: Path) -> None:
    ds = _read(path)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    found = client.search_for_instances(uids[0], search_filters={"SOPInstanceUID": uids[2]})
    assert [f["00080018"]["Value"][0] for f in found] == [uids[2]]

    url = f"{module_url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    raw = httpx.get(url, headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"})
    assert _single_part(raw) == path.read_bytes()

    metadata = client.retrieve_instance_metadata(*uids)
    restored = pydicom.Dataset.from_json(metadata, bulk_data_uri_handler=lambda *_: b"")
    for key, value in metadata.items():
        if "Value" in value and value["vr"] not in _BINARY and int(key, 16) in ds:
            assert _same(restored[int(key, 16)], ds[int(key, 16)]), key

    if "PixelData" not in ds:
        assert httpx.get(f"{url}/frames/1").status_code == 404
        assert httpx.get(f"{url}/rendered").status_code == 406
        return
    (frame,) = client.retrieve_instance_frames(*uids, [1])
    assert frame
    expected = _decoded(path)
    rendered = httpx.get(f"{url}/rendered")
    octet = httpx.get(
        f"{url}/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    if expected is None:
        assert rendered.status_code == 406, rendered.text
        # Native frames are sent as stored without decoding; only compressed ones need pydicom.
        assert octet.status_code == (200 if not ds.file_meta.TransferSyntaxUID.is_compressed else 406)
        return
    assert rendered.status_code == 200, rendered.text
    assert Image.open(io.BytesIO(rendered.content)).size == (ds.Columns, ds.Rows)
    assert octet.status_code == 200
    if int(ds.BitsAllocated) > 1:
        got = np.frombuffer(_single_part(octet), expected.dtype.newbyteorder("<"))
        np.testing.assert_array_equal(got.reshape(expected.shape), expected)
