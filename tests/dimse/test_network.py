"""The listener's policy, limits and less common services, with real pynetdicom peers on loopback.

These do not depend on the index backend, so they run on SQLite only: storage commitment, DICOM
TLS, C-CANCEL, association limits, refused callers, unknown SOP classes, malformed and silent peers.
"""

from __future__ import annotations

import io
import logging
import queue
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from imagebridge.config import Settings
from imagebridge.dicom.matching import Level
from imagebridge.dimse.handlers import find as find_handler
from imagebridge.dimse.handlers.commitment import WELL_KNOWN_INSTANCE
from imagebridge.dimse.peers import Peer
from imagebridge.dimse.scu import Scu, identifier
from imagebridge.dimse.server import DimseServer
from imagebridge.index.lookup import Target
from imagebridge.services.archive import Archive
from tests.dimse.conftest import AET, Listener, StoreScp, add_peer
from tests.samples import sample

CERTS = Path(pynetdicom.__file__).parent / "tests" / "cert_files"


@pytest.fixture
def dimse_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="imagebridge.dimse")
    return caplog


def logged(caplog: pytest.LogCaptureFixture, text: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(text in r.getMessage() for r in caplog.records):
            return True
        time.sleep(0.05)
    return False


def echo(port: int, calling: str = "ECHOER", called: str = AET) -> bool:
    ae = AE(calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False
    try:
        answer = assoc.send_c_echo()
        return bool(answer is not None and answer.Status == 0)
    finally:
        assoc.release()


def copies(archive: Archive, count: int) -> str:
    """Store ``count`` instances of one series; returns the study UID."""
    ds = pydicom.dcmread(sample("rtplan.dcm"))
    for number in range(count):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1.{number}"
        buffer = io.BytesIO()
        ds.save_as(buffer)
        buffer.seek(0)
        archive.ingest.store_stream(buffer)
    return str(ds.StudyInstanceUID)


# Storage commitment (PS3.4 Annex J)


def test_storage_commitment_reports_committed_and_missing(lone: Archive, listener: Listener) -> None:
    server = listener(allow_any_caller=False)
    ct = pydicom.dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    lone.ingest.store_file(Path(sample("CT_small.dcm")))
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: evt.Event) -> int:
        reports.put((int(event.request.EventTypeID), event.event_information))
        return 0x0000

    receiver = AE("COMMITTER")
    receiver.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    scp = receiver.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        add_peer(lone, "committer", "COMMITTER", scp.server_address[1])
        request = Dataset()
        request.TransactionUID = "1.2.826.0.1.3680043.10.2.1"
        request.ReferencedSOPSequence = [Dataset(), Dataset()]
        for item, uid in zip(request.ReferencedSOPSequence, [ct.SOPInstanceUID, "1.2.3.999"], strict=True):
            item.ReferencedSOPClassUID = ct.SOPClassUID
            item.ReferencedSOPInstanceUID = uid
        ae = AE("COMMITTER")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
        assert assoc.is_established
        try:
            answer, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        finally:
            assoc.release()
        assert answer.Status == 0x0000
        event_type, info = reports.get(timeout=10)
    finally:
        scp.shutdown()
    assert event_type == 2  # Storage Commitment Request Complete - Failures Exist
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [ct.SOPInstanceUID]
    [failed] = info.FailedSOPSequence
    assert (failed.ReferencedSOPInstanceUID, failed.FailureReason) == ("1.2.3.999", 0x0112)


# DICOM TLS (PS3.15 Annex B.1) with pynetdicom's test certificates


def _tls_client() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(CERTS / "server.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(CERTS / "client.crt"), str(CERTS / "client.key"))
    return context


@pytest.fixture
def tls_server(listener: Listener) -> DimseServer:
    if not (CERTS / "server.crt").is_file():
        pytest.skip(f"pynetdicom's test certificates are not in {CERTS}")
    return listener(
        dicom_tls_port=0,
        tls_cert=CERTS / "server.crt",
        tls_key=CERTS / "server.key",
        tls_ca=CERTS / "client.crt",
    )


def test_tls_echo_and_store(lone: Archive, tls_server: DimseServer) -> None:
    port = tls_server.tls_port
    assert port is not None
    ae = AE("TLSCLIENT")
    ae.add_requested_context(Verification)
    ae.add_requested_context(pydicom.dcmread(sample("CT_small.dcm")).SOPClassUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET, tls_args=(_tls_client(), None))
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(pydicom.dcmread(sample("CT_small.dcm"))).Status == 0
    finally:
        assoc.release()
    ct = pydicom.dcmread(sample("CT_small.dcm"), stop_before_pixels=True)
    assert lone.lookup.instances(Target(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID))
    settings = Settings(
        tls_ca=CERTS / "server.crt", tls_cert=CERTS / "client.crt", tls_key=CERTS / "client.key"
    )
    assert Scu(settings, "TLSSCU").echo(Peer("secure", AET, "127.0.0.1", port, tls=True)) == 0


def test_tls_port_refuses_plain_and_silent_clients_cleanly(
    tls_server: DimseServer, dimse_logs: pytest.LogCaptureFixture
) -> None:
    port = tls_server.tls_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port)):  # silent: must not block the accept loop
        started = time.monotonic()
        assert not echo(port)  # a plain DICOM client: the handshake fails, the association never starts
        assert time.monotonic() - started < 5
        ae = AE("TLSCLIENT")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title=AET, tls_args=(_tls_client(), None))
        assert assoc.is_established
        assoc.release()
    assert echo(tls_server.port)


# C-CANCEL (PS3.7 §9.3.2.3)


def test_cancel_during_large_find(lone: Archive, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-CANCEL sent while matches are still going out (here: after the first one, with each
    answer made 2 ms slower, as a large archive would be) makes the listener stop answering and
    end with status Cancel. (pynetdicom drops a C-CANCEL that arrives before the SCP has started
    on the request, so the cancel must come once answers flow, as a user's "stop" does.)"""
    answer_of = find_handler.identifiers.answer

    def slow_answer(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.002)
        return answer_of(*args, **kwargs)

    monkeypatch.setattr(find_handler.identifiers, "answer", slow_answer)
    server = listener()
    study = copies(lone, 200)
    ae = AE("CANCELLER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
    query = identifier(Level.IMAGE, [f"StudyInstanceUID={study}", "SOPInstanceUID"])
    context_id = assoc.accepted_contexts[0].context_id
    statuses = []
    try:
        for answer, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=7):
            statuses.append(int(answer.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, context_id)
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00
    assert statuses.count(0xFF00) < 200


def test_cancel_during_large_move(lone: Archive, listener: Listener, tmp_path: Path) -> None:
    server = listener()
    study = copies(lone, 60)
    destination = StoreScp(tmp_path / "moved")
    try:
        add_peer(lone, "storescp", destination.aet, destination.port)
        ae = AE("CANCELLER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
        query = identifier(Level.STUDY, [f"StudyInstanceUID={study}"])
        statuses = []
        try:
            model = StudyRootQueryRetrieveInformationModelMove
            for answer, _ in assoc.send_c_move(query, destination.aet, model, msg_id=9):
                statuses.append(int(answer.Status))
                if len(statuses) == 2:
                    assoc.send_c_cancel(9, assoc.accepted_contexts[0].context_id)
        finally:
            assoc.release()
    finally:
        destination.stop()
    assert statuses[-1] == 0xFE00
    assert 1 <= len(destination.files()) < 60


# Limits, policy and bad input


def test_association_limit(listener: Listener, dimse_logs: pytest.LogCaptureFixture) -> None:
    # The held associations must outlive the network timeout on a busy machine.
    server = listener(dicom_max_associations=2, dicom_acse_timeout=10.0, dicom_network_timeout=10.0)
    ae = AE("HOLDER")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", server.port, ae_title=AET) for _ in range(2)]
    assert all(a.is_established for a in held)
    extra = ae.associate("127.0.0.1", server.port, ae_title=AET)
    assert extra.is_rejected
    assert logged(dimse_logs, "too many associations")
    for assoc in held:
        assoc.release()
    time.sleep(0.2)
    assert echo(server.port)


def test_unknown_caller_and_wrong_called_title_are_refused(
    lone: Archive, listener: Listener, dimse_logs: pytest.LogCaptureFixture
) -> None:
    server = listener(allow_any_caller=False)
    assert not echo(server.port, calling="STRANGER")
    assert logged(dimse_logs, "calling AE title 'STRANGER' is not a configured peer")
    add_peer(lone, "friend", "STRANGER", 104)
    assert echo(server.port, calling="STRANGER")  # peers are re-read per connection
    assert not echo(server.port, calling="STRANGER", called="SOMEONEELSE")
    assert logged(dimse_logs, "called AE title 'SOMEONEELSE' is not ours")


def test_unknown_sop_class_is_refused(listener: Listener) -> None:
    server = listener()
    ae = AE("ODDITY")
    ae.add_requested_context(Verification)
    ae.add_requested_context("1.2.826.0.1.3680043.10.999.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
    assert assoc.is_established
    try:
        assert [str(c.abstract_syntax) for c in assoc.rejected_contexts] == ["1.2.826.0.1.3680043.10.999.1"]
        ds = Dataset()
        ds.SOPClassUID = "1.2.826.0.1.3680043.10.999.1"
        ds.SOPInstanceUID = "1.2.3"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(ds)
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_garbage_bytes_are_dropped_and_listener_keeps_serving(
    listener: Listener, dimse_logs: pytest.LogCaptureFixture
) -> None:
    server = listener()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x09\x00GARBAGE-GARBAGE" * 40)
        assert _closed(sock)
    assert logged(dimse_logs, "a PDU of unknown type")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x01\x00\x00\x10\x00\x00" + b"\x00" * 64)  # announces 1 MiB, sends 64 bytes
        started = time.monotonic()
        assert _closed(sock)
        assert time.monotonic() - started < 4
    assert echo(server.port)


def test_silent_peer_is_closed_after_the_timeout(
    listener: Listener, dimse_logs: pytest.LogCaptureFixture
) -> None:
    server = listener()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        assert _closed(sock)
        assert time.monotonic() - started < 4
    assert logged(dimse_logs, "closed without an association")
    assert echo(server.port)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closes the connection (reads until EOF, at most 5 s)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_store_of_an_unusable_dataset_fails_with_a_status(
    lone: Archive, listener: Listener, dimse_logs: pytest.LogCaptureFixture
) -> None:
    """No Study Instance UID: refused by the same ingest checks as STOW-RS, and logged."""
    server = listener()
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    del ds.StudyInstanceUID
    ae = AE("MODALITY")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
    try:
        answer = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert answer.Status >= 0xA000 and answer.ErrorComment
    assert logged(dimse_logs, f"C-STORE {ds.SOPInstanceUID} from MODALITY")
    assert echo(server.port)


def test_storage_commitment_from_an_unknown_requester_fails(listener: Listener) -> None:
    """The report goes on a new association to the requester, so it must be a configured peer."""
    server = listener()
    request = Dataset()
    request.TransactionUID = "1.2.826.0.1.3680043.10.2.2"
    request.ReferencedSOPSequence = []
    ae = AE("NOBODYKNOWN")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AET)
    try:
        answer, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    finally:
        assoc.release()
    assert answer.Status == 0x0110


def test_connections_do_not_wait_for_delayed_acks(listener: Listener) -> None:
    """TCP_NODELAY on both ends: otherwise each C-STORE waits ~40 ms for a delayed ACK."""
    server = listener()
    me = Peer("imagebridge", AET, "127.0.0.1", server.port)
    with Scu(Settings(), "FAST").associate(me, [build_context(Verification)]) as assoc:
        ours = assoc.dul.socket.socket  # type: ignore[union-attr]
        [accepted] = server.ae.active_associations
        theirs = accepted.dul.socket.socket  # type: ignore[union-attr]
        for sock in (ours, theirs):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_retrieve_without_its_unique_key_fails_with_a900(
    listener: Listener, tmp_path: Path, dimse_logs: pytest.LogCaptureFixture
) -> None:
    server = listener()
    me = Peer("imagebridge", AET, "127.0.0.1", server.port)
    query = identifier(Level.SERIES, ["StudyInstanceUID=1.2.3"])  # no Series Instance UID
    result = Scu(Settings(), "GETTER").get(me, query, tmp_path / "got")
    assert (result.status, result.completed) == (0xA900, 0)
    assert logged(dimse_logs, "C-GET from GETTER")
