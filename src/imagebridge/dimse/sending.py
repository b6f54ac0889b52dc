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
LOSSLESS = frozenset(
    {
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    }
)
"""Compressed syntaxes an instance may be re-encoded into when the peer refuses its stored one;
an archive never makes a lossy copy on its own (PS3.5 §8.2)."""


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
        refused = exc
    except AttributeError:
        return send(pydicom.dcmread(path), *args, **kwargs)  # file meta lacks what pynetdicom needs
    accepted = _accepted_syntaxes(assoc, sop_class)
    reasons = []
    for syntax in accepted:
        try:
            converted = pydicom.dcmread(io.BytesIO(transcode.transcode(path, syntax)))
        except CannotTranscode as exc:
            reasons.append(exc.reason)
            continue
        log.info("peer refused the stored syntax of %s; sending it as %s", path.name, syntax.name)
        return send(converted, *args, **kwargs)
    offered = ", ".join(UID(s).name for s in _accepted_syntaxes(assoc, sop_class, lossless=False))
    log.warning(
        "cannot send %s (%s): the peer accepted only [%s] for it%s",
        path.name,
        UID(sop_class).name,
        offered or "nothing",
        f"; {reasons[-1]}" if reasons else "",
    )
    raise ValueError(f"no accepted presentation context can carry {path.name}") from refused


def _accepted_syntaxes(assoc: Association, sop_class: str, *, lossless: bool = True) -> list[UID]:
    """The syntaxes the peer accepted for the class (as SCP of the C-STORE), Explicit then Implicit
    VR Little Endian first, then the lossless compressed ones; all of them if not ``lossless``."""
    accepted = {
        UID(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.transfer_syntax and cx.as_scu
    }
    others = sorted(s for s in accepted - set(NATIVE) if s in LOSSLESS or not lossless)
    return [s for s in NATIVE if s in accepted] + others
