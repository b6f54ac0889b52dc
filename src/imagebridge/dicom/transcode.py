"""Re-encode an instance in another transfer syntax (PS3.18 §8.7.3.5), for clients that ask for one.

Decoding uses whatever pixel data plugins are installed (pylibjpeg, openjpeg,
libjpeg, gdcm); encoding uses pydicom's encoders. What cannot be done is a
CannotTranscode error, which the surfaces turn into 406.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian

from imagebridge.dicom import syntaxes
from imagebridge.errors import CannotTranscode

log = logging.getLogger(__name__)


def transcode(path: Path, target: str) -> bytes:
    """The Part 10 bytes of the instance at ``path`` in transfer syntax ``target``."""
    target_uid = UID(target)
    if not target_uid.is_transfer_syntax:
        raise CannotTranscode(f"{target} is not a transfer syntax this server knows")
    ds = pydicom.dcmread(path)
    try:
        _convert(ds, target_uid)
        buffer = io.BytesIO()
        ds.save_as(
            buffer,
            implicit_vr=target_uid == ImplicitVRLittleEndian,
            little_endian=target_uid != ExplicitVRBigEndian,
            enforce_file_format=True,
        )
    except CannotTranscode:
        raise
    except Exception as exc:
        log.info("transcoding %s to %s failed: %s", path.name, target, exc)
        raise CannotTranscode(
            f"this instance cannot be converted to transfer syntax {target} ({exc}); "
            "ask with transfer-syntax=* for the stored bytes"
        ) from exc
    return buffer.getvalue()


def _convert(ds: Dataset, target: UID) -> None:
    source = UID(ds.file_meta.TransferSyntaxUID)
    has_pixels = "PixelData" in ds
    if source == target:
        return
    if has_pixels and source.is_compressed:
        ds.decompress()
    if target.is_compressed:
        if not has_pixels:
            raise CannotTranscode(f"an instance without pixel data cannot be sent in {target.name}")
        ds.compress(target)
        return
    if has_pixels and target == ExplicitVRBigEndian and int(ds.get("BitsAllocated", 8)) > 8:
        ds.PixelData = ds.pixel_array.byteswap().tobytes()
    if has_pixels and source == ExplicitVRBigEndian and int(ds.get("BitsAllocated", 8)) > 8:
        ds.PixelData = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes()
    ds.file_meta.TransferSyntaxUID = target
    if syntaxes.is_native(target) and has_pixels:
        ds["PixelData"].is_undefined_length = False
