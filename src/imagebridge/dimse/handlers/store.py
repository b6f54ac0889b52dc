"""Storage SCP (PS3.4 Annex B): each received dataset goes through ``Ingest.store`` as sent.

The stored Part 10 file is a preamble, file meta information describing the
association's context, and then the dataset bytes exactly as the peer encoded them
in the negotiated transfer syntax (compressed, deflated or native), never decoded.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta

from imagebridge.dimse import status
from imagebridge.dimse.context import DimseContext
from imagebridge.dimse.handlers import who
from imagebridge.errors import ImageBridgeError

log = logging.getLogger("imagebridge.dimse")


def handle_store(event: events.Event, context: DimseContext) -> int | Dataset:
    ingest = context.archive.ingest
    request = cast(C_STORE, event.request)
    spool = ingest.spool()
    try:
        spool.write(b"\x00" * 128 + b"DICM")
        spool.write(encode_file_meta(event.file_meta))
        spool.write(cast(BytesIO, request.DataSet).getbuffer())
        stored = ingest.store(spool)
    except Exception as exc:
        spool.discard()
        answer = status.failure(exc, status.Service.STORE)
        log.warning(
            "C-STORE %s from %s refused (0x%04X): %s",
            request.AffectedSOPInstanceUID,
            who(event.assoc),
            answer.Status,
            answer.ErrorComment,
        )
        if not isinstance(exc, ImageBridgeError):
            log.error("C-STORE failed unexpectedly", exc_info=exc)
        return answer
    log.info(
        "C-STORE %s from %s: %s (%s)",
        stored.sop_uid,
        who(event.assoc),
        stored.outcome.value,
        stored.transfer_syntax,
    )
    return status.SUCCESS
