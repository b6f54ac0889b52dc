"""Pixel data one frame at a time: stored bytes through the frame index, or decoded by pydicom.

Stored frames are read by offset (PS3.5 §A.4 fragments, or native frame slices) so that a
frame request touches only that frame's bytes. Decoding is for what the stored form cannot
give: native little endian frames (PS3.18 §8.7.3.5.2) of compressed, big endian or
bit-packed instances, and pixel values for rendering.
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder, pack_bits, pixel_array
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebridge.dicom import syntaxes
from imagebridge.dicom.frames import FrameIndex
from imagebridge.dicom.parse import read_stored
from imagebridge.errors import CannotTranscode

log = logging.getLogger(__name__)


def read_stored_frame(fp: BinaryIO, index: FrameIndex, number: int) -> bytes:
    """Frame ``number`` (1-based) exactly as stored; fragments of one frame are concatenated."""
    chunks = []
    for fragment in index.locate(number):
        fp.seek(fragment.offset)
        chunks.append(fp.read(fragment.length))
    return b"".join(chunks)


def can_decode(syntax: str) -> bool:
    """Whether an installed plugin decodes pixel data stored in ``syntax``."""
    if syntaxes.is_native(syntax) or syntaxes.is_deflated(syntax):
        return True
    try:
        return bool(get_decoder(UID(syntax)).is_available)
    except NotImplementedError:
        return False


def require_decoder(syntax: str) -> None:
    if not can_decode(syntax):
        name = UID(syntax).name
        raise CannotTranscode(
            f"pixel data stored in {name} ({syntax}) cannot be decoded by this server; "
            "ask with transfer-syntax=* for the stored bytes"
        )


def decode_frame(path: Path, number: int) -> np.ndarray:
    """Frame ``number`` (1-based) as pydicom decodes it (colour as RGB); only that frame is decoded."""
    return decode_frame_and_header(path, number)[0]


PRESENTATION_LUT_TAGS = [0x20500010, 0x20500020]
"""Presentation LUT Sequence and Shape (PS3.3 §C.11.6): read with group 0028 for rendering."""


def decode_frame_and_header(path: Path, number: int) -> tuple[np.ndarray, Dataset]:
    """Frame ``number`` (1-based) and the attributes that describe its pixels, from ONE parse of
    the file: the decoder's own header read hands back every non-retired group 0028 attribute
    (Image Pixel, Modality LUT, VOI LUT, palette tables) and the file meta, which is all that
    rendering needs; no second :func:`read_header`."""
    header = Dataset()
    try:
        try:
            array = pixel_array(path, index=number - 1, ds_out=header, specific_tags=PRESENTATION_LUT_TAGS)
        except (AttributeError, ValueError):
            # The file-based reader (one frame, no full read) misses pixel data in deflated files
            # and trips on some odd offset tables; the dataset-based reader copes with both.
            header = read_stored(path)
            array = pixel_array(header, index=number - 1)
    except Exception as exc:  # decoders raise many types on data they cannot handle
        log.info("decoding frame %d of %s failed: %s", number, path.name, exc)
        raise CannotTranscode(
            f"frame {number} of this instance cannot be decoded ({exc}); "
            "ask with transfer-syntax=* for the stored bytes"
        ) from exc
    return array, header


_IMPLICIT_VR: dict[str, bool] = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}
"""Little endian native syntaxes, whose frames are read as stored (value: implicit VR)."""

_GROUP_LENGTH = struct.Struct("<HH2sHL")


def frame_and_header(
    path: Path, number: int, syntax: str, index: FrameIndex | None
) -> tuple[np.ndarray, Dataset]:
    """What :func:`decode_frame_and_header` gives, read through the frame index when the frame
    is plain little endian greyscale (most CT, MR, CR, DX): no pydicom decode, only the
    attributes before the pixel data parsed, only that frame's bytes read."""
    if index is not None and index.native_offset is not None and syntax in _IMPLICIT_VR:
        found = _stored_greyscale(path, number, index, _IMPLICIT_VR[syntax])
        if found is not None:
            return found
    return decode_frame_and_header(path, number)


def _stored_greyscale(
    path: Path, number: int, index: FrameIndex, implicit: bool
) -> tuple[np.ndarray, Dataset] | None:
    """None when the frame is not 8- or 16-bit single-sample greyscale, or the attributes do not
    parse: the pydicom decoder then decides (and words any error)."""
    (fragment,) = index.locate(number)
    with path.open("rb") as fp:
        assert index.native_offset is not None
        header = _attributes_before_pixels(fp.read(index.native_offset), implicit)
        dtype = None if header is None else _greyscale_dtype(header, fragment.length)
        if header is None or dtype is None:
            return None
        fp.seek(fragment.offset)
        data = bytearray(fragment.length)
        if fp.readinto(data) != fragment.length:
            return None
    array = np.frombuffer(data, dtype).reshape(header.Rows, header.Columns)
    unused = dtype.itemsize * 8 - header.BitsStored
    if unused:
        # PS3.5 §8.1.1: bits above Bits Stored are not part of the value (as pydicom corrects them).
        np.left_shift(array, unused, out=array)
        np.right_shift(array, unused, out=array)
    return array, header


def _attributes_before_pixels(head: bytes, implicit: bool) -> Dataset | None:
    """The data set up to Pixel Data, located through the File Meta group length (PS3.10 §7.1)."""
    start = 132 if head[128:132] == b"DICM" else 0
    try:
        group, element, vr, _, length = _GROUP_LENGTH.unpack_from(head, start)
        if (group, element, vr) != (2, 0, b"UL"):
            return None
        return read_dataset(io.BytesIO(head[start + 12 + length :]), implicit, True, stop_when=_at_pixels)
    except Exception:  # pydicom raises many types on odd data; the full decoder copes or explains
        return None


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag == 0x7FE00010


def _greyscale_dtype(header: Dataset, frame_length: int) -> np.dtype[np.integer] | None:
    try:
        bits, stored = int(header.BitsAllocated), int(header.BitsStored)
        signed, samples = int(header.PixelRepresentation), int(header.get("SamplesPerPixel", 1))
        photometric = str(header.PhotometricInterpretation).strip()
        size = int(header.Rows) * int(header.Columns) * bits // 8
    except (AttributeError, TypeError, ValueError):
        return None
    if (
        bits not in (8, 16)
        or not 0 < stored <= bits
        or signed not in (0, 1)
        or samples != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
        or size != frame_length
    ):
        return None
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")


def native_frame(path: Path, number: int, bits_allocated: int) -> bytes:
    """Frame ``number`` as Explicit VR Little Endian pixel data: little endian samples,
    bit-packed when Bits Allocated is 1 (PS3.5 §8.1.1)."""
    array = decode_frame(path, number)
    if bits_allocated == 1:
        return pack_bits(array)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def read_header(path: Path) -> Dataset:
    """The attributes before the pixel data (what rendering and encoding checks need)."""
    return read_stored(path, stop_before_pixels=True)


def encapsulated_frame(path: Path, number: int, count: int) -> bytes:
    """Frame ``number`` of encapsulated pixel data whose layout was not indexed at ingest."""
    ds = read_stored(path)
    try:
        return get_frame(ds.PixelData, number - 1, number_of_frames=count)
    except Exception as exc:
        raise CannotTranscode(
            f"frame {number} cannot be located in the encapsulated pixel data ({exc})"
        ) from exc
