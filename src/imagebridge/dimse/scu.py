"""DIMSE service user: C-ECHO, C-FIND, C-MOVE, C-GET and C-STORE to a peer, as plain Python.

The CLI (``imagebridge dicom ...``) draws progress bars over it; the exchange layer
can call it the same way. Files are sent as their stored bytes in their own transfer
syntax (see ``sending.py``); instances received by C-GET are written as sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from imagebridge.config import Settings
from imagebridge.dicom import tags
from imagebridge.dicom.matching import Level
from imagebridge.dimse import sockets, tls
from imagebridge.dimse.peers import Peer
from imagebridge.dimse.sending import MAX_CONTEXTS, contexts_for, enable_raw_sending, file_pair, send_file
from imagebridge.errors import ImageBridgeError, InvalidInput

log = logging.getLogger("imagebridge.dimse")

Progress = Callable[[int, int | None], None]
"""Called with (done, total) as sub-operations complete; total is None while unknown."""

MODELS = {
    ("study", "find"): StudyRootQueryRetrieveInformationModelFind,
    ("study", "move"): StudyRootQueryRetrieveInformationModelMove,
    ("study", "get"): StudyRootQueryRetrieveInformationModelGet,
    ("patient", "find"): PatientRootQueryRetrieveInformationModelFind,
    ("patient", "move"): PatientRootQueryRetrieveInformationModelMove,
    ("patient", "get"): PatientRootQueryRetrieveInformationModelGet,
}
DEFAULT_RETURN_KEYS = {
    Level.PATIENT: ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    Level.STUDY: (
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
        "ModalitiesInStudy",
        "StudyDescription",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"),
    Level.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}


USUAL_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)
"""Proposed one context each for a SOP class whose stored syntax the peer did not say (no
Available Transfer Syntax UID in its C-FIND answer), so it can send what it has as it has it."""


class AssociationFailed(ImageBridgeError):
    """The peer could not be reached, refused the association, or accepted no needed context."""


@dataclass
class RetrieveResult:
    """The final C-MOVE/C-GET counts (PS3.4 §C.4.2.1.6) and the final status."""

    status: int = 0xFFFF
    completed: int = 0
    failed: int = 0
    warning: int = 0
    received: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


@dataclass
class SendResult:
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def identifier(level: Level, keys: Sequence[str], *, defaults: bool = True) -> Dataset:
    """An identifier from ``Keyword=value`` (matching key) and ``Keyword`` (return key) items."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    given = list(keys) or (list(DEFAULT_RETURN_KEYS[level]) if defaults else [])
    for item in given:
        name, _, value = item.partition("=")
        try:
            tag = tags.parse_tag(name)
        except ValueError as exc:
            raise InvalidInput(f"-k {item}: {exc}") from exc
        vr = dictionary_VR(tag)
        parts: Any = value.split("\\") if "\\" in value else (value or None)
        ds.add_new(tag, vr, [] if vr == "SQ" else parts)
    return ds


class Scu:
    """One calling AE; each operation opens its own association to the peer."""

    def __init__(self, settings: Settings, ae_title: str | None = None) -> None:
        self.settings = settings
        self.ae_title = ae_title or settings.ae_title
        enable_raw_sending()

    def _ae(self) -> AE:
        ae = AE(self.ae_title)
        ae.acse_timeout = self.settings.dicom_acse_timeout
        ae.dimse_timeout = self.settings.dicom_dimse_timeout
        ae.network_timeout = self.settings.dicom_network_timeout
        return ae

    @contextmanager
    def associate(
        self,
        peer: Peer,
        contexts: list[PresentationContext],
        *,
        ext_neg: list[Any] | None = None,
        handlers: list[Any] | None = None,
    ) -> Iterator[Association]:
        ae = self._ae()
        tls_args = tls.client_args(self.settings) if peer.tls else None
        assoc = ae.associate(
            peer.host,
            peer.port,
            contexts=contexts,
            ae_title=peer.ae_title,
            ext_neg=ext_neg,
            evt_handlers=sockets.with_no_delay(handlers),
            tls_args=tls_args,
        )
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "could not be reached or aborted"
            raise AssociationFailed(f"{peer.describe()} {why}")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def echo(self, peer: Peer) -> int:
        with self.associate(peer, [build_context(Verification)]) as assoc:
            return _status(assoc.send_c_echo())

    def find(self, peer: Peer, query: Dataset, *, model: str = "study") -> Iterator[Dataset]:
        """Yield each matching identifier; raises AssociationFailed or InvalidInput on a failure status."""
        sop_class = MODELS[(model, "find")]
        with self.associate(peer, [build_context(sop_class)]) as assoc:
            for answer, found in assoc.send_c_find(query, sop_class):
                code = _status(answer)
                if code in (0xFF00, 0xFF01) and found is not None:
                    yield found
                elif code not in (0x0000, 0xFE00):
                    comment = answer.get("ErrorComment", "") if answer else "no response"
                    raise InvalidInput(f"C-FIND failed with status 0x{code:04X} {comment}".strip())

    def move(
        self,
        peer: Peer,
        query: Dataset,
        destination: str,
        *,
        model: str = "study",
        progress: Progress | None = None,
    ) -> RetrieveResult:
        sop_class = MODELS[(model, "move")]
        with self.associate(peer, [build_context(sop_class)]) as assoc:
            return _retrieve(assoc.send_c_move(query, destination, sop_class), progress)

    def get(
        self,
        peer: Peer,
        query: Dataset,
        folder: Path,
        *,
        model: str = "study",
        progress: Progress | None = None,
    ) -> RetrieveResult:
        """C-GET into ``folder``: each instance written as ``<SOP Instance UID>.dcm``, bytes as sent.

        A C-GET requester proposes the storage contexts before it knows what will come, and the
        peer picks one syntax per context; so the instances are first asked for by C-FIND at
        IMAGE level, and each (SOP class, Available Transfer Syntax) found gets a context of its own.
        """
        sop_class = MODELS[(model, "get")]
        folder.mkdir(parents=True, exist_ok=True)
        received: list[Path] = []
        storage = self._storage_contexts(peer, query, model)
        contexts = [build_context(sop_class), *storage]
        roles = [
            build_role(uid, scp_role=True) for uid in sorted({str(cx.abstract_syntax) for cx in storage})
        ]
        handlers = [(evt.EVT_C_STORE, _write_received, [folder, received])]
        with self.associate(peer, contexts, ext_neg=roles, handlers=handlers) as assoc:
            result = _retrieve(assoc.send_c_get(query, sop_class), progress)
        result.received = received
        return result

    def _storage_contexts(self, peer: Peer, query: Dataset, model: str) -> list[PresentationContext]:
        """Contexts for the instances a C-GET will bring, or for every storage class if unknown."""
        pairs: set[tuple[str, str]] = set()
        try:
            for found in self.find(peer, _instances_query(query), model=model):
                sop_class = str(found.get("SOPClassUID", "") or "")
                syntax = str(found.get("AvailableTransferSyntaxUID", "") or "")
                if sop_class:
                    pairs.update((sop_class, s) for s in ([syntax] if syntax else USUAL_SYNTAXES))
        except ImageBridgeError as exc:
            log.info("C-GET: could not list the instances first (%s); proposing every storage class", exc)
        if pairs and len(contexts_for(pairs)) < MAX_CONTEXTS:
            return contexts_for(pairs)
        storage = [str(cx.abstract_syntax) for cx in StoragePresentationContexts][: MAX_CONTEXTS - 1]
        return [build_context(uid, ALL_TRANSFER_SYNTAXES) for uid in storage]

    def send(self, peer: Peer, paths: Sequence[Path], *, progress: Progress | None = None) -> SendResult:
        """C-STORE each file as it is on disk, in batches of at most 128 presentation contexts."""
        result = SendResult()
        done = 0
        for batch, contexts in _batches(paths, result):
            with self.associate(peer, contexts) as assoc:
                for path, (sop_class, _syntax) in batch:
                    _store_one(assoc, path, sop_class, result)
                    done += 1
                    if progress:
                        progress(done, len(paths))
        return result


def _instances_query(query: Dataset) -> Dataset:
    """The IMAGE-level C-FIND for the instances a retrieve identifier names, with their SOP class
    and stored transfer syntax as return keys."""
    found = Dataset()
    found.QueryRetrieveLevel = Level.IMAGE.value
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        if query.get(keyword):
            setattr(found, keyword, query.get(keyword))
    found.SOPInstanceUID = query.get("SOPInstanceUID", "")
    found.SOPClassUID = ""
    found.AvailableTransferSyntaxUID = ""
    return found


def _status(answer: Dataset | None) -> int:
    return int(answer.Status) if answer is not None and "Status" in answer else 0xFFFF


def _retrieve(
    responses: Iterator[tuple[Dataset, Dataset | None]], progress: Progress | None
) -> RetrieveResult:
    result = RetrieveResult()
    for answer, _identifier in responses:
        result.status = _status(answer)
        if answer is None or "Status" not in answer:
            break
        result.completed = int(answer.get("NumberOfCompletedSuboperations", result.completed) or 0)
        result.failed = int(answer.get("NumberOfFailedSuboperations", result.failed) or 0)
        result.warning = int(answer.get("NumberOfWarningSuboperations", result.warning) or 0)
        remaining = answer.get("NumberOfRemainingSuboperations")
        done = result.completed + result.failed + result.warning
        if progress:
            progress(
                done,
                done + int(remaining)
                if remaining is not None
                else (done if result.status != 0xFF00 else None),
            )
    return result


def _write_received(event: evt.Event, folder: Path, received: list[Path]) -> int:
    uid = str(cast(C_STORE, event.request).AffectedSOPInstanceUID or "")
    name = "".join(c for c in uid if c in "0123456789.") or "unnamed"  # never a path from the peer
    target = folder / f"{name}.dcm"
    target.write_bytes(event.encoded_dataset())
    received.append(target)
    return 0x0000


Batch = list[tuple[Path, tuple[str, str]]]


def _batches(paths: Sequence[Path], result: SendResult) -> Iterator[tuple[Batch, list[PresentationContext]]]:
    batch: Batch = []
    pairs: set[tuple[str, str]] = set()
    for path in paths:
        try:
            pair = file_pair(path)
        except Exception as exc:
            result.failed.append((str(path), f"not a DICOM file ({exc})"))
            continue
        if not all(pair):
            result.failed.append((str(path), "its file meta names no SOP class or transfer syntax"))
            continue
        if len(contexts_for(pairs | {pair})) >= MAX_CONTEXTS and batch:
            yield batch, contexts_for(pairs)
            batch, pairs = [], set()
        batch.append((path, pair))
        pairs.add(pair)
    if batch:
        yield batch, contexts_for(pairs)


def _store_one(assoc: Association, path: Path, sop_class: str, result: SendResult) -> None:
    try:
        code = _status(send_file(assoc, assoc.send_c_store, path, sop_class))
    except Exception as exc:
        result.failed.append((str(path), str(exc)))
        return
    if code in (0x0000, 0xB000, 0xB006, 0xB007):
        result.sent += 1
    else:
        result.failed.append((str(path), f"status 0x{code:04X}"))
