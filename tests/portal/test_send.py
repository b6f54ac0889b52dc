"""Send to my system: STOW-RS to a second imagebridge, C-STORE to a pynetdicom storescp (both port 0)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import build_context

from imagebridge.index.lookup import Target
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import archive_per_backend
from tests.portal.conftest import Site
from tests.portal.test_pages import csrf_of, signed_in

ALL_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
]


@pytest.fixture
def other_archive(tmp_path: Path) -> Iterator[tuple[str, object]]:
    """A second imagebridge: the recipient's own DICOMweb server (no tokens on its trusted network)."""
    for archive in archive_per_backend("sqlite", tmp_path / "other", dicomweb_anonymous=True):
        server = BackgroundServer(create_app(archive)).start()
        try:
            yield f"{server.url}/dicomweb", archive
        finally:
            server.stop()


@pytest.fixture
def storescp() -> Iterator[tuple[int, dict[str, bytes]]]:
    """A pynetdicom Storage SCP on 127.0.0.1, port 0, keeping what it receives by SOP Instance UID."""
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset()
        return 0x0000

    ae = AE("RECIPIENT")
    ae.supported_contexts = [
        build_context(cx.abstract_syntax, ALL_SYNTAXES) for cx in AllStoragePresentationContexts
    ]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield server.socket.getsockname()[1], received
    finally:
        server.shutdown()


def _send(client: httpx.Client, study: str, **fields: str) -> httpx.Response:
    form = client.get(f"/portal/send?study={study}")
    assert form.status_code == 200
    return client.post("/portal/send", data={"csrf": csrf_of(form.text), "study": study, **fields})


def test_clinician_sends_a_study_with_stow(site: Site, other_archive: tuple[str, object]) -> None:
    url, other = other_archive
    study = site.anna_studies["examples_ybr_color.dcm"]
    answer = _send(signed_in(site, "dr.grey"), study, method="stow", url=url)
    assert answer.status_code == 200 and "1 of 1 images were stored" in answer.text, answer.text
    mine = site.archive.lookup.instances(Target(study))
    theirs = other.lookup.instances(Target(study))  # type: ignore[attr-defined]
    assert [i.sop_uid for i in theirs] == [i.sop_uid for i in mine]
    with site.archive.blobs.open(mine[0].blob_key) as a, other.blobs.open(theirs[0].blob_key) as b:  # type: ignore[attr-defined]
        assert a.read() == b.read()


def test_recipient_sends_with_c_store(site: Site, storescp: tuple[int, dict[str, bytes]]) -> None:
    port, received = storescp
    assert site.app is not None
    ct = site.anna_studies["CT_small.dcm"]
    created = site.app.state.sharing.create(patient=site.anna_patient, studies=[ct], created_by="anna")
    client = httpx.Client(base_url=site.url, follow_redirects=True, timeout=60)
    page = client.get(created.link)
    client.post(
        created.link, data={"code": created.code, "birth_date": "1980-02-14", "csrf": csrf_of(page.text)}
    )
    answer = _send(client, ct, method="dimse", host="127.0.0.1", port=str(port), aet="RECIPIENT")
    stored = site.archive.lookup.instances(Target(ct))
    assert f"{len(stored)} of {len(stored)} images were stored" in answer.text, answer.text
    assert set(received) == {i.sop_uid for i in stored}
    assert answer.text.count(">Stored<") == len(stored)


def test_bad_addresses_come_back_to_the_form(site: Site) -> None:
    client = signed_in(site, "dr.grey")
    study = site.anna_studies["CT_small.dcm"]
    bad_url = _send(client, study, method="stow", url="ftp://example")
    assert bad_url.status_code == 400 and "starting with https://" in bad_url.text
    bad_port = _send(client, study, method="dimse", host="127.0.0.1", port="70000", aet="X")
    assert bad_port.status_code == 400 and "1 to 65535" in bad_port.text
    nobody = _send(client, study, method="dimse", host="127.0.0.1", port="1", aet="NOBODY")
    assert nobody.status_code == 400 and re.search("Could not send", nobody.text)


def test_view_only_share_cannot_send(site: Site) -> None:
    assert site.app is not None
    ct = site.anna_studies["CT_small.dcm"]
    created = site.app.state.sharing.create(
        patient=site.anna_patient, studies=[ct], created_by="anna", allow_download=False
    )
    client = httpx.Client(base_url=site.url, follow_redirects=True)
    page = client.get(created.link)
    client.post(
        created.link, data={"code": created.code, "birth_date": "1980-02-14", "csrf": csrf_of(page.text)}
    )
    assert client.get(f"/portal/send?study={ct}").status_code == 403
