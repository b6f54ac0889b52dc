"""Several clients storing overlapping and distinct instances into one study while others read,
on SQLite and PostgreSQL: every instance stored once, counts exact, no 5xx, re-stores idempotent."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa
from pydicom.uid import generate_uid

from imagebridge.index.schema import instances
from imagebridge.services.archive import Archive
from tests.factory import make_instance, multipart, part10, stow_type

CLIENTS = 6
SHARED = 12
OWN = 5
BATCH = 3


def _study_corpus() -> tuple[str, list[str], list[bytes], list[list[bytes]]]:
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    patient = {"PatientID": "CONC-1", "PatientName": "Concurrent^Test"}

    def instance(n: int) -> bytes:
        s = n % len(series)
        return part10(
            make_instance(
                study=study,
                series=series[s],
                Modality=("CT", "MR", "CT")[s],
                InstanceNumber=n,
                SeriesNumber=s + 1,
                **patient,
            )
        )

    shared = [instance(n) for n in range(SHARED)]
    own = [[instance(SHARED + c * OWN + i) for i in range(OWN)] for c in range(CLIENTS)]
    return study, series, shared, own


def test_concurrent_stores_and_reads(archive: Archive, dicomweb_url: str) -> None:
    study, series, shared, own = _study_corpus()
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def record(status: int) -> None:
        with lock:
            statuses.append(status)

    def writer(client: int) -> None:
        mine = shared + own[client]
        random.Random(client).shuffle(mine)
        with httpx.Client(timeout=60) as http:
            for start in range(0, len(mine), BATCH):
                response = http.post(
                    f"{dicomweb_url}/studies/{study}",
                    content=multipart(mine[start : start + BATCH]),
                    headers={"Content-Type": stow_type()},
                )
                record(response.status_code)
                assert response.status_code == 200, response.text

    def reader() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                for path in (
                    f"/studies?StudyInstanceUID={study}",
                    f"/studies/{study}/series",
                    f"/studies/{study}/instances",
                ):
                    response = http.get(dicomweb_url + path)
                    record(response.status_code)
                    assert response.status_code == 200

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS + 2) as pool:
        readers = [pool.submit(reader) for _ in range(2)]
        writers = [pool.submit(writer, c) for c in range(CLIENTS)]
        try:
            for future in writers:
                future.result(timeout=120)
        finally:
            stop.set()
        for future in readers:
            future.result(timeout=30)
    assert time.monotonic() - started < 120
    assert all(s < 500 for s in statuses)

    total = SHARED + CLIENTS * OWN
    (answer,) = httpx.get(f"{dicomweb_url}/studies", params={"StudyInstanceUID": study}, timeout=30).json()
    assert answer["00201208"]["Value"] == [total]
    assert answer["00201206"]["Value"] == [3]
    assert answer["00080061"]["Value"] == ["CT", "MR"]
    found = httpx.get(f"{dicomweb_url}/studies/{study}/series", timeout=30).json()
    counts = {s["0020000E"]["Value"][0]: s["00201209"]["Value"][0] for s in found}
    expected = {uid: sum(1 for n in range(total) if n % 3 == i) for i, uid in enumerate(series)}
    assert counts == expected
    with archive.engine.connect() as conn:
        rows = conn.execute(sa.select(instances.c.sop_uid, instances.c.blob_key)).all()
    assert len(rows) == total == len({r.sop_uid for r in rows})
    assert sorted(archive.blobs.keys()) == sorted(r.blob_key for r in rows)
    assert list(archive.blobs.tmp.iterdir()) == []

    # Everyone stores everything again at once: all 200, nothing changes.
    everything = shared + [d for mine in own for d in mine]
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        again = list(
            pool.map(
                lambda _: (
                    httpx.post(
                        f"{dicomweb_url}/studies",
                        content=multipart(everything),
                        headers={"Content-Type": stow_type()},
                        timeout=120,
                    ).status_code
                ),
                range(CLIENTS),
            )
        )
    assert again == [200] * CLIENTS
    (after,) = httpx.get(f"{dicomweb_url}/studies", params={"StudyInstanceUID": study}, timeout=30).json()
    assert after["00201208"]["Value"] == [total]
    assert len(list(archive.blobs.keys())) == total


def test_concurrent_first_instances_of_new_studies(archive: Archive, dicomweb_url: str) -> None:
    """Many clients create the same new patient, study and series at the same moment."""
    study, series = generate_uid(), generate_uid()
    data = [
        part10(make_instance(study=study, series=series, PatientID="RACE", InstanceNumber=n))
        for n in range(CLIENTS * 2)
    ]
    barrier = threading.Barrier(CLIENTS)

    def store(client: int) -> int:
        barrier.wait(10)
        response = httpx.post(
            f"{dicomweb_url}/studies",
            content=multipart(data[client * 2 : client * 2 + 2]),
            headers={"Content-Type": stow_type()},
            timeout=60,
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        assert list(pool.map(store, range(CLIENTS))) == [200] * CLIENTS
    (answer,) = httpx.get(f"{dicomweb_url}/studies", params={"PatientID": "RACE"}, timeout=30).json()
    assert answer["00201208"]["Value"] == [CLIENTS * 2] and answer["00201206"]["Value"] == [1]
