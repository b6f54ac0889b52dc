"""Re-encode an instance in another transfer syntax (PS3.18 §8.7.3.5), for clients that ask for one.

Decoding uses whatever pixel data plugins are installed (pylibjpeg, openjpeg, libjpeg, gdcm);
encoding uses pydicom's encoders. :func:`obstacle` says, before any byte is sent, why a
conversion cannot be done; the surfaces turn that into 406.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder, pack_bits, pixel_array
from pydicom.pixels.encoders.base import ENCODING_PROFILES
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian

from imagebridge.dicom import pixels
from imagebridge.dicom.parse import read_stored
from imagebridge.errors import CannotTranscode

log = logging.getLogger(__name__)

_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_YBR_DECODED_AS_RGB = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


def obstacle(stored: str, target: str, header: Dataset | None) -> str | None:
    """Why an instance stored in ``stored`` cannot be sent in ``target``, or None if it can.

    ``header`` is the instance's attributes without pixel data, or None when it has no pixel data.
    """
    if target == stored:
        return None
    uid = UID(target)
    if not uid.is_transfer_syntax:
        return f"{target} is not a transfer syntax this server knows"
    if uid == ExplicitVRBigEndian:
        return "Explicit VR Big Endian is retired (PS3.5 §A.3) and not produced by this server"
    if header is not None and not pixels.can_decode(stored):
        return f"pixel data stored in {UID(stored).name} cannot be decoded by this server"
    if not uid.is_compressed or uid.is_deflated:
        return None
    if header is None:
        return f"an instance without pixel data cannot be sent in {uid.name}"
    return _encoder_obstacle(uid, stored, header)


def _encoder_obstacle(uid: UID, stored: str, header: Dataset) -> str | None:
    try:
        encoder = get_encoder(uid)
    except NotImplementedError:
        return f"this server has no encoder for {uid.name}"
    if not encoder.is_available:
        return f"the encoder for {uid.name} is not installed ({'; '.join(encoder.missing_dependencies)})"
    photometric = str(header.get("PhotometricInterpretation", ""))
    if UID(stored).is_compressed and photometric in _YBR_DECODED_AS_RGB:
        photometric = "RGB"
    values = (
        photometric,
        int(header.get("SamplesPerPixel", 1) or 1),
        int(header.get("PixelRepresentation", 0) or 0),
        int(header.get("BitsAllocated", 0) or 0),
        int(header.get("BitsStored", 0) or 0),
    )
    profiles = ENCODING_PROFILES.get(uid)
    if profiles is None:
        return None
    for pi, spp, representations, allocated, stored_bits in profiles:
        if (pi, spp) == values[:2] and all(
            v in allowed
            for v, allowed in zip(values[2:], (representations, allocated, stored_bits), strict=True)
        ):
            return None
    return (
        f"pixel data with Photometric Interpretation {values[0]}, {values[1]} samples, "
        f"{values[3]} bits allocated and {values[4]} stored cannot be encoded in {uid.name} (PS3.5 §8)"
    )


def transcode(path: Path, target: str) -> bytes:
    """The Part 10 bytes of the instance at ``path`` in transfer syntax ``target``."""
    target_uid = UID(target)
    ds = read_stored(path)
    source = UID(ds.file_meta.TransferSyntaxUID)
    reason = obstacle(source, target, ds if "PixelData" in ds else None)
    if reason is not None:
        raise CannotTranscode(f"this instance cannot be sent in {target}: {reason}")
    try:
        if source == ExplicitVRBigEndian:
            _to_little_endian(ds)
        _convert(ds, source, target_uid)
        buffer = io.BytesIO()
        pydicom.dcmwrite(
            buffer,
            ds,
            implicit_vr=target_uid == ImplicitVRLittleEndian,
            little_endian=True,
            # Re-encoding a big endian dataset needs force_encoding, which pydicom allows only
            # without enforce_file_format; the stored file already has its File Meta Information.
            enforce_file_format=source != ExplicitVRBigEndian,
            force_encoding=source == ExplicitVRBigEndian,
        )
    except Exception as exc:
        log.info("transcoding %s to %s failed: %s", path.name, target, exc)
        raise CannotTranscode(
            f"this instance cannot be converted to transfer syntax {target} ({exc}); "
            "ask with transfer-syntax=* for the stored bytes"
        ) from exc
    return buffer.getvalue()


def _convert(ds: Dataset, source: UID, target: UID) -> None:
    has_pixels = "PixelData" in ds
    if source == target:
        return
    if has_pixels and source.is_compressed and not source.is_deflated:
        ds.decompress(generate_instance_uid=False)
    if target.is_compressed and not target.is_deflated:
        ds.compress(target, generate_instance_uid=False)
        return
    ds.file_meta.TransferSyntaxUID = target
    if has_pixels and "PixelData" in ds:
        ds["PixelData"].is_undefined_length = False


def _to_little_endian(ds: Dataset) -> None:
    """Swap the binary words that pydicom keeps as read, so the dataset can be written little endian."""
    if "PixelData" in ds:
        array = pixel_array(ds, raw=True)
        if int(ds.BitsAllocated) == 1:
            ds.PixelData = pack_bits(array)
        else:
            ds.PixelData = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    _swap_words(ds)


def _swap_words(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _swap_words(item)
        elif elem.tag != 0x7FE00010 and elem.VR in _WORD_SIZE and isinstance(elem.value, bytes):
            size = _WORD_SIZE[elem.VR]
            if len(elem.value) % size == 0:
                elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()
