"""Full-study WADO-RS with transfer-syntax=*: parts read in batches arrive byte for byte, in order."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydicom.uid import generate_uid

from imagebridge.services import retrieve
from tests.factory import make_instance, part10

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture(scope="module")
def study(module_url: str) -> tuple[str, list[bytes]]:
    """Five instances of one series, stored as sent (sizes differ, so order matters)."""
    study_uid, series_uid = generate_uid(), generate_uid()
    files = [
        part10(make_instance(study=study_uid, series=series_uid, InstanceNumber=n, pixels=8 * n))
        for n in range(1, 6)
    ]
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n" for f in files
    )
    response = httpx.post(
        f"{module_url}/studies",
        content=body + f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )
    assert response.status_code == 200, response.text
    return study_uid, files


def _parts(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    delimiter = f"--{boundary}".encode()
    body = response.content
    assert body.startswith(delimiter + b"\r\n") and body.endswith(delimiter + b"--\r\n")
    parts = body[: -len(delimiter) - 4].split(b"\r\n" + delimiter + b"\r\n")
    parts[0] = parts[0][len(delimiter) + 2 :]
    parts[-1] = parts[-1].removesuffix(b"\r\n")
    return [part.split(b"\r\n\r\n", 1)[1] for part in parts]


@pytest.mark.parametrize("batch", [1, 3000, retrieve.BATCH])
def test_study_is_the_stored_bytes_whatever_the_batch_size(
    module_url: str, study: tuple[str, list[bytes]], batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieve, "BATCH", batch)
    study_uid, files = study
    response = httpx.get(f"{module_url}/studies/{study_uid}", headers={"Accept": ANY})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert _parts(response) == files
