"""Query SCP (PS3.4 §C.4.1): C-FIND over the same matching and index search as QIDO-RS."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from imagebridge.dimse import identifiers, status
from imagebridge.dimse.context import DimseContext
from imagebridge.dimse.handlers import who
from imagebridge.services import query as query_service

log = logging.getLogger("imagebridge.dimse")

Answer = tuple[int | Dataset, Dataset | None]


def handle_find(event: events.Event, context: DimseContext) -> Iterator[Answer]:
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
    try:
        identifier = event.identifier
        level = identifiers.level_of(identifier, patient_root=patient_root)
        matches = _matches(context, identifier, level)
    except Exception as exc:
        answer = status.failure(exc, status.Service.FIND)
        log.warning(
            "C-FIND from %s failed (0x%04X): %s", who(event.assoc), answer.Status, answer.ErrorComment
        )
        yield answer, None
        return
    log.info("C-FIND %s from %s: %d matches", level.value, who(event.assoc), len(matches))
    for match in matches:
        if event.is_cancelled:
            log.info("C-FIND from %s cancelled", who(event.assoc))
            yield status.CANCEL, None
            return
        yield status.PENDING, identifiers.answer(identifier, match, level, context.ae_title)


AVAILABLE_TRANSFER_SYNTAX = 0x00083002


def _matches(context: DimseContext, identifier: Dataset, level: identifiers.Level) -> list[dict[str, Any]]:
    settings = context.settings
    result = query_service.run(
        context.archive.engine,
        identifiers.query_of(identifier, level),
        include=identifiers.requested_tags(identifier),
        base_url=f"{settings.public_base_url.rstrip('/')}/dicomweb" if settings.public_base_url else "",
        max_limit=settings.dicom_max_find_results,
    )
    for warning in result.warnings:
        log.info("C-FIND: %s", warning)
    if level is identifiers.Level.IMAGE and AVAILABLE_TRANSFER_SYNTAX in identifier:
        _add_stored_syntaxes(context, result.matches)
    return result.matches


def _add_stored_syntaxes(context: DimseContext, matches: list[dict[str, Any]]) -> None:
    """Available Transfer Syntax UID (0008,3002, PS3.4 §C.6.1.1.5.1): the stored syntax, which a
    C-GET requester can then propose so that it receives the stored bytes."""
    uids = [m["00080018"]["Value"][0] for m in matches if m.get("00080018", {}).get("Value")]
    stored = identifiers.stored_syntaxes(context.archive.engine, uids)
    for match in matches:
        syntax = stored.get(match.get("00080018", {}).get("Value", [""])[0])
        if syntax:
            match["00083002"] = {"vr": "UI", "Value": [syntax]}
