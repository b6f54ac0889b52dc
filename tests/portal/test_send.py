"""Send to my system: STOW-RS to a second imagebridge, C-STORE to a pynetdicom storescp (both port 0).

Both listen on 127.0.0.1, which a server refuses to send to unless ``send_allowed_networks`` says
so: the ``site`` here allows 127.0.0.0/8; ``closed_site`` keeps the default (public addresses only).
"""

from __future__ import annotations

import http.server
import ipaddress
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import build_context

from imagebridge.audit.store import AuditStore
from imagebridge.config import Settings
from imagebridge.errors import NotFound
from imagebridge.index.lookup import Target
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import archive_per_backend
from tests.portal.conftest import Site, start_site
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


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """The portal's site, allowed to send to loopback (where the test recipients listen)."""
    yield from start_site(request.param, tmp_path, send_allowed_networks=["127.0.0.0/8"])


@pytest.fixture
def closed_site(tmp_path: Path) -> Iterator[Site]:
    """The default: only public addresses may be sent to."""
    yield from start_site("sqlite", tmp_path / "closed")


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


@pytest.fixture
def loopback_site(tmp_path: Path) -> Iterator[Site]:
    """SQLite only: a site allowed to reach 127.0.0.0/8 and nothing else private."""
    yield from start_site("sqlite", tmp_path / "loopback", send_allowed_networks=["127.0.0.0/8"])


PRIVATE = "not allowed to send to private addresses; ask your administrator"


def test_private_stow_destinations_are_refused_by_default(
    closed_site: Site, other_archive: tuple[str, object]
) -> None:
    url, other = other_archive
    port = httpx.URL(url).port
    study = closed_site.anna_studies["CT_small.dcm"]
    client = signed_in(closed_site, "dr.grey")
    for target in (
        url,  # the listening second archive on 127.0.0.1
        f"http://localhost:{port}/dicomweb",
        f"http://2130706433:{port}/dicomweb",  # 127.0.0.1 as one number
        f"http://[::1]:{port}/dicomweb",
        f"http://[::ffff:127.0.0.1]:{port}/dicomweb",
        "http://10.0.0.1/dicomweb",
        "http://172.16.5.4/dicomweb",
        "http://192.168.1.10/dicomweb",
        "http://169.254.169.254/latest/meta-data",
        "https://[fd12:3456::1]/dicomweb",
        "https://[fe80::1]/dicomweb",
        "http://0.0.0.0/dicomweb",
    ):
        answer = _send(client, study, method="stow", url=target)
        assert answer.status_code == 400 and PRIVATE in answer.text, (target, answer.text)
    with pytest.raises(NotFound):
        other.lookup.instances(Target(study))  # type: ignore[attr-defined]


def test_private_dicom_destinations_are_refused_by_default(
    closed_site: Site, storescp: tuple[int, dict[str, bytes]]
) -> None:
    port, received = storescp
    assert closed_site.app is not None
    ct = closed_site.anna_studies["CT_small.dcm"]
    created = closed_site.app.state.sharing.create(
        patient=closed_site.anna_patient, studies=[ct], created_by="anna"
    )
    client = httpx.Client(base_url=closed_site.url, follow_redirects=True, timeout=60)
    page = client.get(created.link)
    client.post(
        created.link, data={"code": created.code, "birth_date": "1980-02-14", "csrf": csrf_of(page.text)}
    )  # a share recipient: no account at all
    for host in ("127.0.0.1", "localhost", "::1", "10.1.2.3", "172.31.0.9", "192.168.0.4", "169.254.169.254"):
        answer = _send(client, ct, method="dimse", host=host, port=str(port), aet="RECIPIENT")
        assert answer.status_code == 400 and PRIVATE in answer.text, (host, answer.text)
    assert received == {}
    store = AuditStore.of(closed_site.archive.engine)
    store.flush()
    refused = [e for e in store.search(limit=50) if e.action == "send"]
    assert len(refused) == 7 and {e.outcome for e in refused} == {"failure"}
    assert all(e.share_id and e.study_uid == ct and PRIVATE in e.reason for e in refused)


def test_a_name_is_resolved_once_and_only_the_checked_address_is_reached(
    loopback_site: Site, other_archive: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 (allowed) at the check, then a private address;
    the connection still goes to the checked address, and the name is asked once."""
    from imagebridge.portal import egress

    url, other = other_archive
    port = httpx.URL(url).port
    asked: list[str] = []

    def lookup(host: str, _port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"] if len(asked) == 1 else ["10.9.9.9"]

    monkeypatch.setattr(egress, "_lookup", lookup)
    study = loopback_site.anna_studies["CT_small.dcm"]
    answer = _send(
        signed_in(loopback_site, "dr.grey"), study, method="stow", url=f"http://pacs.test:{port}/dicomweb"
    )
    assert "images were stored at http://pacs.test" in answer.text, answer.text
    assert asked == ["pacs.test"]
    mine = loopback_site.archive.lookup.instances(Target(study))
    assert len(other.lookup.instances(Target(study))) == len(mine)  # type: ignore[attr-defined]


def test_every_resolved_address_must_be_allowed(
    loopback_site: Site, storescp: tuple[int, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagebridge.portal import egress

    port, received = storescp
    monkeypatch.setattr(egress, "_lookup", lambda host, _port: ["127.0.0.1", "169.254.169.254"])
    client = signed_in(loopback_site, "dr.grey")
    study = loopback_site.anna_studies["CT_small.dcm"]
    stow = _send(client, study, method="stow", url=f"http://pacs.test:{port}/dicomweb")
    dimse = _send(client, study, method="dimse", host="pacs.test", port=str(port), aet="RECIPIENT")
    for answer in (stow, dimse):
        assert answer.status_code == 400 and PRIVATE in answer.text, answer.text
    assert received == {}


def test_redirects_are_not_followed(loopback_site: Site, other_archive: tuple[str, object]) -> None:
    url, other = other_archive

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"{url}/studies")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        study = loopback_site.anna_studies["CT_small.dcm"]
        answer = _send(
            signed_in(loopback_site, "dr.grey"),
            study,
            method="stow",
            url=f"http://127.0.0.1:{server.server_port}/dicomweb",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 400 and "redirect (HTTP 307), which is not followed" in answer.text
    with pytest.raises(NotFound):
        other.lookup.instances(Target(study))  # type: ignore[attr-defined]


def test_the_pinned_transport_reaches_no_other_host() -> None:
    from imagebridge.portal import egress

    destination = egress.Destination("pacs.test", 9, (ipaddress.ip_address("127.0.0.1"),))
    with egress.client(destination, 5) as client, pytest.raises(httpx.ConnectError, match="not the checked"):
        client.get("http://169.254.169.254:9/latest/meta-data")


def test_allowed_networks_are_validated() -> None:
    with pytest.raises(ValidationError, match="not a network"):
        Settings(send_allowed_networks=["10.0.0.0/8", "intranet"])
    assert Settings(send_allowed_networks=[" 10.20.0.0/16 "]).send_allowed_networks == ["10.20.0.0/16"]


def _certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (its own CA), as PEM files."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_https_to_the_checked_address_verifies_the_typed_name(tmp_path: Path) -> None:
    """Connected by address, the TLS server name and Host header are still the name typed, so the
    certificate must be that name's; a certificate for another name is refused."""
    import ssl

    from imagebridge.portal import egress

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = self.headers["Host"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    cert, key = _certificate(tmp_path, "pacs.test")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    server.socket = served.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    try:
        for name, ok in (("pacs.test", True), ("other.test", False)):
            trusted = ssl.create_default_context(cafile=str(cert))
            destination = egress.Destination(name, port, (ipaddress.ip_address("127.0.0.1"),))
            with httpx.Client(
                transport=egress.PinnedTransport(destination, verify=trusted), timeout=10
            ) as client:
                if ok:
                    assert client.get(f"https://{name}:{port}/").text == f"{name}:{port}"
                else:
                    with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
                        client.get(f"https://{name}:{port}/")
    finally:
        server.shutdown()
        server.server_close()
