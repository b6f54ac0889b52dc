"""STOW-RS (PS3.18 §10.5) against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
import sqlalchemy as sa
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from imagebridge.index.schema import instances
from imagebridge.services.archive import Archive
from tests.factory import make_instance, multipart, part10, stow_type

FAILED, REFERENCED, RETRIEVE_URL = "00081198", "00081199", "00081190"
FAILURE_REASON, SOP_CLASS, SOP_INSTANCE = "00081197", "00081150", "00081155"


def _post(url: str, body: Any, content_type: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": content_type or stow_type(), "Accept": "application/dicom+json"}
    return httpx.post(url, content=body, headers=headers, timeout=120, **kwargs)


def _items(response: httpx.Response, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = response.json().get(key, {}).get("Value", [])
    return items


def _reasons(response: httpx.Response) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in _items(response, FAILED)]


def _state(archive: Archive) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Blob keys and index rows: what must not change when a request changes nothing."""
    with archive.engine.connect() as conn:
        rows = conn.execute(
            sa.select(instances.c.sop_uid, instances.c.blob_key, instances.c.created_at).order_by(
                instances.c.sop_uid
            )
        ).all()
    return sorted(archive.blobs.keys()), [tuple(r) for r in rows]


def test_dicomweb_client_store_answers_with_referenced_sops(dicomweb_url: str) -> None:
    study = generate_uid()
    datasets = [make_instance(study=study, InstanceNumber=n) for n in (1, 2)]
    answer = DICOMwebClient(dicomweb_url).store_instances(datasets)
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so only the path is certain.
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study}")
    referenced = answer.ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in referenced] == [d.SOPInstanceUID for d in datasets]
    for item, ds in zip(referenced, datasets, strict=True):
        assert item.ReferencedSOPClassUID == ds.SOPClassUID
        url = f"/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        assert item.RetrieveURL.endswith(url)
    assert "FailedSOPSequence" not in answer


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary=b0undary',
        "multipart/related; type=application/dicom; boundary=b0undary",
        'multipart/related; boundary="b0undary"',
        'Multipart/Related; Type="Application/DICOM"; Boundary=b0undary',
        'multipart/related; boundary=b0undary; type="application/dicom"; start="<1@x>"',
    ],
)
def test_content_type_spellings(dicomweb_url: str, content_type: str) -> None:
    response = _post(f"{dicomweb_url}/studies", multipart([part10(make_instance())]), content_type)
    assert response.status_code == 200, response.text
    assert len(_items(response, REFERENCED)) == 1


def test_store_into_the_study_in_the_url(dicomweb_url: str) -> None:
    study = generate_uid()
    mine, other = make_instance(study=study), make_instance()
    response = _post(f"{dicomweb_url}/studies/{study}", multipart([part10(mine), part10(other)]))
    assert response.status_code == 202
    assert [r[SOP_INSTANCE]["Value"][0] for r in _items(response, REFERENCED)] == [mine.SOPInstanceUID]
    (failed,) = _items(response, FAILED)
    assert failed[FAILURE_REASON]["Value"] == [0xA900]
    assert failed[SOP_INSTANCE]["Value"] == [other.SOPInstanceUID], "the refused instance is named"
    assert "Warning" in response.headers
    only_other = _post(f"{dicomweb_url}/studies/{study}", multipart([part10(other)]))
    assert only_other.status_code == 409 and _reasons(only_other) == [0xA900]
    searched = httpx.get(
        f"{dicomweb_url}/instances", params={"SOPInstanceUID": other.SOPInstanceUID}, timeout=30
    )
    assert searched.json() == [], "nothing of the refused instance was stored"


def test_partial_success_is_202_and_total_failure_409(dicomweb_url: str) -> None:
    good = make_instance()
    response = _post(f"{dicomweb_url}/studies", multipart([part10(good), b"not dicom at all"]))
    assert response.status_code == 202
    assert len(_items(response, REFERENCED)) == 1 and _reasons(response) == [0xC000]
    assert response.headers["Warning"].startswith('299 imagebridge "1 of 2 instances not stored')
    none = _post(f"{dicomweb_url}/studies", multipart([b"junk", b"\x00" * 200]))
    assert none.status_code == 409 and _reasons(none) == [0xC000, 0xC000]
    assert REFERENCED not in none.json()


def test_parts_of_another_type_are_refused_one_by_one(dicomweb_url: str) -> None:
    boundary = "xyz"
    body = (
        b"--xyz\r\nContent-Type: application/dicom+json\r\n\r\n[{}]\r\n"
        b"--xyz\r\nContent-Type: application/dicom\r\n\r\n" + part10(make_instance()) + b"\r\n--xyz--\r\n"
    )
    response = _post(f"{dicomweb_url}/studies", body, f"multipart/related; boundary={boundary}")
    assert response.status_code == 202
    assert _reasons(response) == [0xC000]


def test_same_instance_again_changes_nothing(archive: Archive, dicomweb_url: str) -> None:
    body = multipart([part10(make_instance())])
    assert _post(f"{dicomweb_url}/studies", body).status_code == 200
    before = _state(archive)
    again = _post(f"{dicomweb_url}/studies", body)
    assert again.status_code == 200 and len(_items(again, REFERENCED)) == 1
    assert _state(archive) == before


def test_different_object_under_a_stored_sop_uid_is_refused(archive: Archive, dicomweb_url: str) -> None:
    first = make_instance(PatientName="First^Version")
    assert _post(f"{dicomweb_url}/studies", multipart([part10(first)])).status_code == 200
    before = _state(archive)
    second = make_instance(
        study=first.StudyInstanceUID,
        series=first.SeriesInstanceUID,
        sop=first.SOPInstanceUID,
        PatientName="Second^Version",
        PatientID=first.PatientID,
    )
    response = _post(f"{dicomweb_url}/studies", multipart([part10(second)]))
    assert response.status_code == 409
    (failed,) = _items(response, FAILED)
    assert failed[FAILURE_REASON]["Value"] == [0x0111]
    assert failed[SOP_INSTANCE]["Value"] == [first.SOPInstanceUID]
    assert "already stored" in response.headers["Warning"]
    assert _state(archive) == before
    stored = DICOMwebClient(dicomweb_url).retrieve_instance(
        first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID
    )
    assert str(stored.PatientName) == "First^Version"


def test_preamble_epilogue_and_extra_part_headers(dicomweb_url: str) -> None:
    data = part10(make_instance())
    body = (
        b"This is a preamble that clients may send.\r\n"
        b"--b0undary\r\n"
        b"content-type: APPLICATION/DICOM\r\n"
        b"Content-ID: <part1@example>\r\n"
        b"Content-Description: a CT slice\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n--b0undary--\r\n"
        b"and an epilogue that is ignored\r\n--b0undary\r\n"
    )
    response = _post(f"{dicomweb_url}/studies", body)
    assert response.status_code == 200, response.text


def test_closing_delimiter_missing_after_a_complete_part_is_tolerated(dicomweb_url: str) -> None:
    body = (
        b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n"
        + part10(make_instance())
        + b"\r\n--b0undary\r\n"
    )
    assert _post(f"{dicomweb_url}/studies", body).status_code == 200


def test_one_byte_chunks_split_every_boundary(dicomweb_url: str) -> None:
    datasets = [make_instance(), make_instance()]
    body = multipart([part10(d) for d in datasets], boundary="split-me")

    def chunks() -> Iterator[bytes]:
        for i in range(len(body)):
            yield body[i : i + 1]

    response = _post(f"{dicomweb_url}/studies", chunks(), stow_type("split-me"))
    assert response.status_code == 200, response.text
    assert len(_items(response, REFERENCED)) == 2


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_warning_header_is_ascii_even_for_non_ascii_reasons(dicomweb_url: str) -> None:
    data = part10(make_instance(study="1.2.3.999999"))
    odd = data.replace(b"1.2.3.999999", "1.2.3.\u20ac9".encode())  # quoted back in the reason
    response = _post(f"{dicomweb_url}/studies/1.2.3", multipart([odd]))
    assert response.status_code == 409
    header = response.headers["Warning"]
    assert header.isascii() and header.startswith('299 imagebridge "') and header.endswith('"')
    quoted = b'--b0undary\r\nContent-Type: text/\xe9"quoted"\r\n\r\nx\r\n--b0undary--\r\n'
    response = _post(f"{dicomweb_url}/studies", quoted)
    assert response.status_code == 409 and response.headers["Warning"].isascii()


def _large_instance(size: int) -> tuple[pydicom.Dataset, Iterator[bytes]]:
    """A valid CT instance of about ``size`` bytes, produced in 64 KiB chunks, never whole."""
    side = int((size // 2) ** 0.5)
    ds = make_instance(pixels=1, Rows=side, Columns=side)
    del ds.PixelData
    head = part10(ds)
    length = side * side * 2
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", length)
    chunk = bytes(64 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + head + element
        left = length
        while left:
            n = min(left, len(chunk))
            yield chunk[:n] if n < len(chunk) else chunk
            left -= n
        yield b"\r\n--b0undary--\r\n"

    return ds, chunks()


@pytest.mark.slow
def test_memory_does_not_grow_with_the_request(dicomweb_url: str) -> None:
    size = 300 * 1024 * 1024
    ds, chunks = _large_instance(size)
    tracemalloc.start()
    try:
        started = time.monotonic()
        response = _post(f"{dicomweb_url}/studies", chunks)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert peak < 32 * 1024 * 1024, f"peak Python allocation {peak / 2**20:.1f} MiB for a 300 MiB request"
    assert elapsed < 60
    found = httpx.get(f"{dicomweb_url}/instances", params={"SOPInstanceUID": ds.SOPInstanceUID}, timeout=30)
    assert found.json()[0]["00280010"]["Value"] == [ds.Rows]


def test_a_slow_upload_does_not_block_queries(dicomweb_url: str) -> None:
    """Storing streams on the event loop; other requests are served meanwhile."""
    release = threading.Event()
    data = part10(make_instance())

    def slow() -> Iterator[bytes]:
        yield b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + data[:100]
        release.wait(10)
        yield data[100:] + b"\r\n--b0undary--\r\n"

    result: dict[str, httpx.Response] = {}
    upload = threading.Thread(target=lambda: result.setdefault("r", _post(f"{dicomweb_url}/studies", slow())))
    upload.start()
    try:
        assert httpx.get(f"{dicomweb_url}/studies", timeout=5).status_code == 200
    finally:
        release.set()
        upload.join(30)
    assert result["r"].status_code == 200


def test_outcomes_are_reported_in_the_order_parts_were_sent(dicomweb_url: str) -> None:
    """Parts are stored several at a time; the response still lists them as they came."""
    study = generate_uid()
    sizes = [64, 4, 128, 4, 32, 4, 96, 4, 16, 4]
    sent = [make_instance(study=study, pixels=size, InstanceNumber=n) for n, size in enumerate(sizes, 1)]
    bodies = [part10(ds) for ds in sent]
    bodies.insert(5, b"not dicom at all")
    response = _post(f"{dicomweb_url}/studies", multipart(bodies))
    assert response.status_code == 202
    stored = [item["00081155"]["Value"][0] for item in _items(response, "00081199")]
    assert stored == [ds.SOPInstanceUID for ds in sent]
    assert _reasons(response) == [0xC000]


@pytest.mark.parametrize("pixels", [64, 800], ids=["small part", "part over SPOOL_CHUNK"])
def test_a_part_the_disk_cannot_take_is_refused_with_out_of_resources_and_leaves_no_file(
    archive: Archive, dicomweb_url: str, monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    """Disk full while spooling: a small part (spooled by the thread that stores it) fails alone
    with 0xA700 and a reason; a part larger than SPOOL_CHUNK (spooled while it arrives) ends the
    request with a 503 that says why. Either way no spool file is left behind."""
    import errno

    from imagebridge.storage.base import Spool

    def full(_spool: Spool, _data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "write", full)
    monkeypatch.setattr(Spool, "write_all", full)
    body = multipart([part10(make_instance(pixels=pixels))])
    response = _post(f"{dicomweb_url}/studies", body)
    if pixels == 64:
        assert response.status_code == 409
        assert _reasons(response) == [0xA700]
        assert "No space left on device" in response.json()[FAILED]["Value"][0]["00000902"]["Value"][0]
    else:
        assert response.status_code == 503
        assert "No space left on device" in response.text
        assert "Traceback" not in response.text
    assert not list(archive.blobs.tmp.iterdir())
    assert _state(archive) == ([], [])


def test_memory_is_given_back_when_the_last_request_has_stored(
    dicomweb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the process's last STOW-RS request, glibc is asked (malloc_trim) to return what the
    storing threads freed; not while another request of the process still stores."""
    from imagebridge.dicomweb import stow

    trimmed: list[tuple[int, int]] = []
    monkeypatch.setattr(stow, "_trim", lambda pad: trimmed.append((pad, stow._storing)) or 1)
    response = _post(f"{dicomweb_url}/studies", multipart([part10(make_instance()) for _ in range(3)]))
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while not trimmed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trimmed == [(0, 0)]

    trimmed.clear()
    monkeypatch.setattr(stow, "_storing", 1)  # as if another request of the process were storing
    response = _post(f"{dicomweb_url}/studies", multipart([part10(make_instance())]))
    assert response.status_code == 200
    time.sleep(0.2)
    assert trimmed == []
    monkeypatch.setattr(stow, "_storing", 0)
