"""Pixel data one frame at a time: stored bytes through the frame index, or decoded by pydicom.

Stored frames are read by offset (PS3.5 §A.4 fragments, or native frame slices) so that a
frame request touches only that frame's bytes. Decoding is for what the stored form cannot
give: native little endian frames (PS3.18 §8.7.3.5.2) of compressed, big endian or
bit-packed instances, and pixel values for rendering.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder, pack_bits, pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imagebridge.dicom import greyscale, syntaxes
from imagebridge.dicom.frames import FrameIndex
from imagebridge.dicom.greyscale import Greyscale
from imagebridge.dicom.parse import read_stored
from imagebridge.errors import CannotTranscode

if TYPE_CHECKING:
    import numpy as np

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


def frame_and_header(
    path: Path, number: int, syntax: str, index: FrameIndex | None
) -> tuple[np.ndarray, Dataset | Greyscale]:
    """What :func:`decode_frame_and_header` gives, read through the frame index when the frame
    is plain little endian greyscale (:func:`greyscale.read_frame`: most CT, MR, CR, DX)."""
    if index is not None and index.native_offset is not None and syntax in _IMPLICIT_VR:
        found = greyscale.read_frame(path, number, index, _IMPLICIT_VR[syntax])
        if found is not None:
            return found
    return decode_frame_and_header(path, number)


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
