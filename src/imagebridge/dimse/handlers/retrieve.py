"""Retrieve SCP (PS3.4 §C.4.2 C-MOVE, §C.4.3 C-GET): stored instances sent as stored.

Both generators follow pynetdicom's protocol (destination for C-MOVE, then the
number of sub-operations, then one ``(status, dataset)`` per instance) and yield
:class:`~imagebridge.dimse.sending.StoredFile` stand-ins so that the bytes on the
wire are the stored bytes. C-CANCEL is checked before every sub-operation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from imagebridge.dimse import identifiers, status, tls
from imagebridge.dimse.context import DimseContext
from imagebridge.dimse.handlers import who
from imagebridge.dimse.sending import StoredFile, contexts_for, send_stored_files
from imagebridge.errors import StorageFailure

log = logging.getLogger("imagebridge.dimse")

_PATIENT_ROOT = {PatientRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelGet}


def _stored_files(event: events.Event, context: DimseContext) -> list[StoredFile]:
    identifier = event.identifier
    level = identifiers.level_of(identifier, patient_root=event.request.AffectedSOPClassUID in _PATIENT_ROOT)
    archive = context.archive
    found = identifiers.instances_of(archive.engine, archive.lookup, identifier, level)
    files = []
    for instance in found:
        path = archive.blobs.path(instance.blob_key)
        if path is None:
            raise StorageFailure("this blob store has no local files to send")
        files.append(StoredFile.of(instance, path))
    return files


def _sub_operations(event: events.Event, service: status.Service, files: list[StoredFile]) -> Iterator[Any]:
    yield len(files)
    for number, stored in enumerate(files, 1):
        if event.is_cancelled:
            log.info(
                "%s from %s cancelled after %d of %d", service.value, who(event.assoc), number - 1, len(files)
            )
            yield status.CANCEL, None
            return
        yield status.PENDING, stored
    log.info("%s from %s: %d sub-operations done", service.value, who(event.assoc), len(files))


def _failed(event: events.Event, service: status.Service, exc: Exception) -> Iterator[Any]:
    answer = status.failure(exc, service)
    log.warning(
        "%s from %s failed (0x%04X): %s", service.value, who(event.assoc), answer.Status, answer.ErrorComment
    )
    yield 1
    yield answer, None


def handle_move(event: events.Event, context: DimseContext) -> Iterator[Any]:
    destination = str(event.move_destination or "").strip()
    peer = context.peers.with_ae_title(destination)
    if peer is None:
        log.warning(
            "C-MOVE from %s refused (0x%04X): destination '%s' is not a configured peer",
            who(event.assoc),
            status.MOVE_DESTINATION_UNKNOWN,
            destination,
        )
        yield None, None
        return
    files: list[StoredFile] = []
    error: Exception | None = None
    try:
        files = _stored_files(event, context)
    except Exception as exc:
        error = exc
    options: dict[str, Any] = {
        "contexts": contexts_for((f.SOPClassUID, f.ib_syntax) for f in files)
        or contexts_for([("1.2.840.10008.1.1", "1.2.840.10008.1.2")]),
        "ae_title": peer.ae_title,
    }
    if peer.tls:
        options["tls_args"] = tls.client_args(context.settings)
    log.info("C-MOVE from %s to %s: %d instances", who(event.assoc), peer.describe(), len(files))
    yield peer.host, peer.port, options
    if error is not None:
        yield from _failed(event, status.Service.MOVE, error)
        return
    yield from _sub_operations(event, status.Service.MOVE, files)


def handle_get(event: events.Event, context: DimseContext) -> Iterator[Any]:
    send_stored_files(event.assoc)
    try:
        files = _stored_files(event, context)
    except Exception as exc:
        yield from _failed(event, status.Service.GET, exc)
        return
    log.info("C-GET from %s: %d instances", who(event.assoc), len(files))
    yield from _sub_operations(event, status.Service.GET, files)


__all__ = ["Dataset", "handle_get", "handle_move"]
