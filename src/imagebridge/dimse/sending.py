"""C-STORE of stored files as their stored bytes, in their stored transfer syntax (PS3.4 §B, §C.4.2/3).

pynetdicom's C-MOVE/C-GET machinery takes ``Dataset`` objects and re-encodes them,
which would drop group lengths, re-deflate and otherwise change bytes. So the
retrieve handlers yield :class:`StoredFile` stand-ins, and an association that
sends them (:func:`send_stored_files`) passes the file path to pynetdicom, which
then streams the dataset bytes as they are on disk
(``_config.STORE_SEND_CHUNKED_DATASET``). Only when the peer accepted no context
for the stored syntax is the instance transcoded to one it accepted.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext, build_context

from imagebridge.dicom import transcode
from imagebridge.errors import CannotTranscode
from imagebridge.index.lookup import StoredInstance

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
"""PS3.8 §9.3.2.2: presentation context IDs are odd numbers 1-255."""
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def enable_raw_sending() -> None:
    """Make pynetdicom send a file path's dataset bytes without decoding them (process-wide)."""
    _config.STORE_SEND_CHUNKED_DATASET = True


class StoredFile(Dataset):
    """Stands for one stored instance in a C-MOVE/C-GET generator; carries the path of its bytes."""

    def __init__(self, path: Path, sop_class_uid: str, sop_uid: str, transfer_syntax: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_uid
        self.ib_path = path
        self.ib_syntax = transfer_syntax

    @classmethod
    def of(cls, instance: StoredInstance, path: Path) -> StoredFile:
        return cls(path, instance.sop_class_uid, instance.sop_uid, instance.transfer_syntax)


def contexts_for(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """One context per (SOP class, stored syntax), then per class one with the native syntaxes
    as the fall-back; cut to 128 contexts, stored syntaxes first."""
    pairs = sorted(set(pairs))
    exact = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
    natives = [build_context(c, list(NATIVE)) for c in sorted({c for c, s in pairs})]
    chosen = (exact + natives)[:MAX_CONTEXTS]
    if len(exact) + len(natives) > MAX_CONTEXTS:
        log.warning("%d presentation contexts needed, 128 proposed", len(exact) + len(natives))
    return chosen


def file_pair(path: Path) -> tuple[str, str]:
    """(SOP Class UID, Transfer Syntax UID) from a Part 10 file's meta information."""
    meta, _offset = split_dataset(path)
    return str(meta.get("MediaStorageSOPClassUID", "")), str(meta.get("TransferSyntaxUID", ""))


def send_stored_files(assoc: Association) -> Association:
    """Let ``assoc.send_c_store`` take :class:`StoredFile` stand-ins (idempotent)."""
    if getattr(assoc, "_ib_raw", False):
        return assoc
    original: Callable[..., Dataset] = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, StoredFile):
            return send_file(assoc, original, dataset.ib_path, dataset.SOPClassUID, *args, **kwargs)
        return original(dataset, *args, **kwargs)

    assoc.send_c_store = send_c_store  # type: ignore[method-assign]
    assoc._ib_raw = True  # type: ignore[attr-defined]
    return assoc


def send_file(
    assoc: Association, send: Callable[..., Dataset], path: Path, sop_class: str, *args: Any, **kwargs: Any
) -> Dataset:
    """Send the file's bytes as stored; transcode only to a syntax the peer accepted for the class."""
    enable_raw_sending()
    try:
        return send(path, *args, **kwargs)
    except ValueError as exc:
        for syntax in _accepted_syntaxes(assoc, sop_class):
            try:
                converted = pydicom.dcmread(io.BytesIO(transcode.transcode(path, syntax)))
            except CannotTranscode:
                continue
            log.info(
                "peer refused the stored syntax of %s (%s); sending it as %s", path.name, exc, syntax.name
            )
            return send(converted, *args, **kwargs)
        raise ValueError(f"no accepted presentation context can carry {path.name}") from exc
    except AttributeError:
        return send(pydicom.dcmread(path), *args, **kwargs)  # file meta lacks what pynetdicom needs


def _accepted_syntaxes(assoc: Association, sop_class: str) -> list[UID]:
    """The syntaxes the peer accepted for the class, Explicit then Implicit VR Little Endian first."""
    accepted = {
        UID(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.transfer_syntax
    }
    return [s for s in NATIVE if s in accepted] + sorted(accepted - set(NATIVE))
