"""Storage Commitment Push Model SCP (PS3.4 Annex J).

N-ACTION (Request Storage Commitment, Action Type 1) is answered at once; the
result follows as an N-EVENT-REPORT on a new association to the requester, which
must therefore be a configured peer (PS3.4 §J.3.3). Committed means: the index has
the instance under the referenced SOP class, and its bytes are in the blob store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, events
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from imagebridge.dicom.matching import Criterion, Level, Query
from imagebridge.dimse import sockets, status, tls
from imagebridge.dimse.context import DimseContext
from imagebridge.dimse.handlers import who
from imagebridge.dimse.peers import Peer
from imagebridge.index import search as index_search

log = logging.getLogger("imagebridge.dimse")

REQUEST_COMMITMENT = 1
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
"""PS3.4 §J.3.5: the Storage Commitment Push Model SOP Instance UID."""
ALL_COMMITTED, SOME_FAILED = 1, 2
NO_SUCH_ACTION = 0x0123


def handle_action(event: events.Event, context: DimseContext) -> tuple[int | Dataset, Dataset | None]:
    if cast(N_ACTION, event.request).ActionTypeID != REQUEST_COMMITMENT:
        return NO_SUCH_ACTION, None
    requester = event.assoc.requestor.ae_title
    peer = context.peers.with_ae_title(requester)
    try:
        info = event.action_information
        transaction = str(info.TransactionUID)
        references = [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in info.ReferencedSOPSequence
        ]
    except Exception as exc:
        log.warning("storage commitment from %s: unreadable request (%s)", who(event.assoc), exc)
        return 0x0110, None
    if peer is None:
        log.warning(
            "storage commitment from %s refused: not a configured peer to report to", who(event.assoc)
        )
        return status.PROCESSING_FAILURE, None
    log.info("storage commitment %s from %s: %d instances", transaction, who(event.assoc), len(references))
    threading.Thread(
        target=report,
        args=(context, peer, transaction, references),
        name=f"commit-{transaction}",
        daemon=True,
    ).start()
    return status.SUCCESS, None


def result(context: DimseContext, transaction: str, references: list[tuple[str, str]]) -> tuple[int, Dataset]:
    """The event type and Event Information of the report (PS3.4 Table J.3-2)."""
    stored = _stored_classes(context, [uid for _, uid in references])
    answer = Dataset()
    answer.TransactionUID = transaction
    done, failed = [], []
    for sop_class, sop_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        if stored.get(sop_uid) == sop_class:
            done.append(item)
            continue
        item.FailureReason = (
            status.CommitmentFailure.NO_SUCH_OBJECT_INSTANCE
            if sop_uid not in stored
            else status.CommitmentFailure.CLASS_INSTANCE_CONFLICT
        )
        failed.append(item)
    answer.ReferencedSOPSequence = done
    if failed:
        answer.FailedSOPSequence = failed
    return (SOME_FAILED if failed else ALL_COMMITTED), answer


def _stored_classes(context: DimseContext, sop_uids: Iterable[str]) -> dict[str, str]:
    uids = [u for u in sop_uids if u]
    if not uids:
        return {}
    query = Query(level=Level.IMAGE, criteria=[Criterion(0x00080018, "\\".join(uids))])
    blobs = context.archive.blobs
    rows = index_search.search(context.archive.engine, query)
    return {
        r["instance_sop_uid"]: r["instance_sop_class_uid"]
        for r in rows
        if blobs.exists(r["instance_blob_key"])
    }


def report(context: DimseContext, peer: Peer, transaction: str, references: list[tuple[str, str]]) -> None:
    try:
        event_type, info = result(context, transaction, references)
        ae = AE(context.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = context.settings.dicom_acse_timeout
        ae.add_requested_context(StorageCommitmentPushModel)
        tls_args = tls.client_args(context.settings) if peer.tls else None
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            ext_neg=[role],
            tls_args=tls_args,
            evt_handlers=sockets.with_no_delay(None),
        )
        if not assoc.is_established:
            log.warning(
                "storage commitment %s: cannot associate with %s to report", transaction, peer.describe()
            )
            return
        try:
            answer, _reply = assoc.send_n_event_report(
                info, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
            )
        finally:
            assoc.release()
        log.info(
            "storage commitment %s reported to %s: %d committed, %d failed (status 0x%04X)",
            transaction,
            peer.describe(),
            len(info.ReferencedSOPSequence),
            len(info.get("FailedSOPSequence", [])),
            int(answer.get("Status", 0xFFFF)) if answer is not None else 0xFFFF,
        )
    except Exception:
        log.exception("storage commitment %s: report to %s failed", transaction, peer.describe())
