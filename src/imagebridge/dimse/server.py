"""The DICOM listener: one pynetdicom AE, its presentation contexts and handlers, started
non-blocking next to the HTTP server (and optionally a second, DICOM TLS, port)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from imagebridge.config import Settings
from imagebridge.dimse import sockets, tls
from imagebridge.dimse.context import DimseContext
from imagebridge.dimse.handlers import association, commitment, echo, find, retrieve, store
from imagebridge.dimse.peers import PeerDirectory
from imagebridge.dimse.sending import enable_raw_sending, send_stored_files
from imagebridge.index.peers import Peers
from imagebridge.services.archive import Archive

log = logging.getLogger("imagebridge.dimse")

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
MAX_PDU = 256 * 1024
_NATIVE_LAST = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
ACCEPTED_SYNTAXES = [s for s in ALL_TRANSFER_SYNTAXES if s not in _NATIVE_LAST] + list(_NATIVE_LAST)
"""Our order of preference: when a peer offers several syntaxes in one context, pynetdicom takes
the first of ours that it offers. Compressed first (a sender offers them only for data already
compressed, so nothing is decompressed on the way); among the native ones Explicit VR Little
Endian first and the retired Big Endian (PS3.5 §A.3) last, so that a C-GET requester offering
only uncompressed syntaxes gets little endian files unchanged."""


def make_ae(settings: Settings, ae_title: str) -> ApplicationEntity:
    """An AE that accepts every storage SOP class in every transfer syntax, Q/R, commitment, echo."""
    ae = AE(ae_title)
    ae.maximum_associations = settings.dicom_max_associations
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.maximum_pdu_size = MAX_PDU
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        # SCU and SCP roles, so that C-GET requesters (SCP role for storage) are accepted too.
        ae.add_supported_context(
            str(context.abstract_syntax), ACCEPTED_SYNTAXES, scu_role=True, scp_role=True
        )
    for model in QUERY_RETRIEVE:
        ae.add_supported_context(model)
    ae.add_supported_context(StorageCommitmentPushModel)
    return ae


class DimseServer:
    """``start()`` returns once listening; ``port`` is the real port (0 picks a free one)."""

    def __init__(
        self,
        archive: Archive,
        *,
        host: str | None = None,
        port: int | None = None,
        ae_title: str | None = None,
    ) -> None:
        settings = archive.settings
        self.host = host or settings.host
        self.requested_port = settings.dicom_port if port is None else port
        self.ae_title = ae_title or settings.ae_title
        self.context = DimseContext(archive, PeerDirectory(settings, Peers(archive.engine)), self.ae_title)
        self.ae = make_ae(settings, self.ae_title)
        self._servers: list[ThreadedAssociationServer] = []

    @property
    def port(self) -> int:
        return int(self._servers[0].server_address[1])

    @property
    def tls_port(self) -> int | None:
        return int(self._servers[1].server_address[1]) if len(self._servers) > 1 else None

    def start(self) -> DimseServer:
        enable_raw_sending()
        _send_stored_files_on_move(self.ae)
        handlers = self._handlers()
        timeout = self.context.settings.dicom_network_timeout
        plain = self.ae.start_server((self.host, self.requested_port), block=False, evt_handlers=handlers)
        self._servers.append(_bounded(_listening(plain), timeout))
        tls_port = self.context.settings.dicom_tls_port
        if tls_port is not None:
            ssl_context = tls.server_context(self.context.settings)
            secure = self.ae.start_server(
                (self.host, tls_port), block=False, evt_handlers=handlers, ssl_context=ssl_context
            )
            self._servers.append(_bounded(_listening(secure), timeout))
        log.info(
            "DICOM listener %s on %s:%d%s",
            self.ae_title,
            self.host,
            self.port,
            f", TLS on {self.tls_port}" if self.tls_port else "",
        )
        return self

    def stop(self) -> None:
        self.ae.shutdown()
        self._servers.clear()

    def _handlers(self) -> list[Any]:
        ctx = [self.context]
        return [
            (evt.EVT_CONN_OPEN, association.on_connection, ctx),
            (evt.EVT_CONN_CLOSE, association.on_closed),
            (evt.EVT_FSM_TRANSITION, association.on_transition),
            (evt.EVT_ESTABLISHED, association.on_established),
            (evt.EVT_REJECTED, association.on_rejected),
            (evt.EVT_ABORTED, association.on_aborted),
            (evt.EVT_RELEASED, association.on_released),
            (evt.EVT_C_ECHO, echo.handle_echo),
            (evt.EVT_C_STORE, store.handle_store, ctx),
            (evt.EVT_C_FIND, find.handle_find, ctx),
            (evt.EVT_C_MOVE, retrieve.handle_move, ctx),
            (evt.EVT_C_GET, retrieve.handle_get, ctx),
            (evt.EVT_N_ACTION, commitment.handle_action, ctx),
        ]


def _send_stored_files_on_move(ae: ApplicationEntity) -> None:
    """C-MOVE sub-associations are opened by pynetdicom through ``ae.associate``; make each one
    send :class:`~imagebridge.dimse.sending.StoredFile` stand-ins as their stored bytes."""
    original: Callable[..., Association] = ae.associate

    def associate(*args: Any, **kwargs: Any) -> Association:
        kwargs["evt_handlers"] = sockets.with_no_delay(kwargs.get("evt_handlers"))
        return send_stored_files(original(*args, **kwargs))

    ae.associate = associate  # type: ignore[method-assign]


def _listening(server: ThreadedAssociationServer | None) -> ThreadedAssociationServer:
    if server is None:
        raise RuntimeError("the DICOM listener did not start")
    return server


def _bounded(server: ThreadedAssociationServer, timeout: float) -> ThreadedAssociationServer:
    """Give every accepted socket a read/write timeout and TCP_NODELAY, and do the TLS handshake
    in the association's thread rather than in the accept loop.

    pynetdicom's own timers run between PDUs; a peer that sends half a PDU (a length it never
    fills) or never finishes a TLS handshake would otherwise hold a thread, or the whole TLS
    listener, for ever.
    """

    def get_request() -> tuple[socket.socket, tuple[str, int]]:
        client, address = cast(socket.socket, server.socket).accept()
        client.settimeout(timeout)
        sockets.no_delay(client)
        if server.ssl_context is not None:
            client = server.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    server.get_request = get_request  # type: ignore[method-assign]
    return server
