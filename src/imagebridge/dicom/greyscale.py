"""Plain greyscale frames, read as stored: their values and the attributes that display them.

Most images (CT, MR, CR, DX, ...) are one sample per pixel, 8 or 16 bits, little endian, with
at most a rescale and a window: no lookup-table sequence, no palette. For these a frame is read
through the frame index (PS3.5 §8.2: native frames lie at fixed offsets) and group 0028 straight
from the bytes before it (:mod:`scan`), without pydicom's decoder or data set. Anything else is
``None`` here, and pydicom decodes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from imagebridge.dicom import scan
from imagebridge.dicom.frames import FrameIndex

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

_ROWS, _COLUMNS, _SAMPLES, _PHOTOMETRIC = 0x00280010, 0x00280011, 0x00280002, 0x00280004
_BITS_ALLOCATED, _BITS_STORED, _PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
_WINDOW_CENTER, _WINDOW_WIDTH, _INTERCEPT, _SLOPE = 0x00281050, 0x00281051, 0x00281052, 0x00281053
_VOI_LUT_FUNCTION = 0x00281056
_LUT_SEQUENCES = (0x00283000, 0x00283010)
"""Modality LUT Sequence and VOI LUT Sequence: tables pydicom applies (PS3.3 §C.11.1, §C.11.2)."""

_GROUP_LENGTH = struct.Struct("<HH2sHL")


@dataclass(frozen=True, eq=False)
class Greyscale:
    """What turns a greyscale frame's values into display values: Photometric Interpretation
    (PS3.3 §C.7.6.3.1.2), Rescale Slope and Intercept (§C.11.1.1.2) and the instance's first
    window (§C.11.2.1.2), as written."""

    photometric: str = "MONOCHROME2"
    rescale: tuple[float, float] | None = None
    """(slope, intercept) when both are present."""
    window: tuple[float, float, str] | None = None
    """(center, width, VOI LUT Function in lower case) of the first window, when it parses."""
    tables: Dataset | None = None
    """The data set, when pydicom applies its Modality LUT (a sequence, or a rescale that does
    not parse) or its VOI LUT Sequence."""

    @classmethod
    def of(cls, ds: Dataset) -> Greyscale:
        tables = ds if any(tag in ds for tag in _LUT_SEQUENCES) else None
        rescale = None
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            try:
                rescale = (float(ds.RescaleSlope), float(ds.RescaleIntercept))
            except (TypeError, ValueError):
                tables = ds
        try:
            window = _window(_first(ds.WindowCenter), _first(ds.WindowWidth), ds.get("VOILUTFunction"))
        except (AttributeError, TypeError, ValueError, IndexError):
            window = None
        return cls(str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(), rescale, window, tables)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, MultiValue | list | tuple) else value


def _window(center: Any, width: Any, function: Any) -> tuple[float, float, str]:
    return float(center), float(width), str(function or "LINEAR").lower()


def read_frame(
    path: Path, number: int, index: FrameIndex, implicit: bool
) -> tuple[np.ndarray, Greyscale] | None:
    """Frame ``number`` (1-based) as pydicom's decoder gives it, and its display attributes;
    None when the instance is not plain greyscale or its attributes do not parse."""
    (fragment,) = index.locate(number)
    assert index.native_offset is not None
    with path.open("rb", buffering=0) as fp:
        found = _attributes(fp.read(index.native_offset), implicit)
        plain = None if found is None else _plain(found, fragment.length)
        if plain is None:
            return None
        (dtype, rows, columns, unused), shown = plain
        array = np.empty((rows, columns), dtype)
        fp.seek(fragment.offset)
        if fp.readinto(array.data) != fragment.length:
            return None
    if unused:
        _ignore_unused_bits(array, unused)
    return array, shown


def _ignore_unused_bits(array: np.ndarray, unused: int) -> None:
    """PS3.5 §8.1.1: bits above Bits Stored are not part of the value. Shifted out (and the sign
    extended) as pydicom does, unless every value is already in range (the usual case)."""
    stored = array.dtype.itemsize * 8 - unused
    low, high = (
        (-(1 << stored - 1), (1 << stored - 1) - 1) if array.dtype.kind == "i" else (0, (1 << stored) - 1)
    )
    if array.min() < low or array.max() > high:
        np.left_shift(array, unused, out=array)
        np.right_shift(array, unused, out=array)


Found = dict[int, str]
Layout = tuple[np.dtype[Any], int, int, int]
"""dtype, rows, columns, unused high bits."""

_NUMBERS = frozenset({_ROWS, _COLUMNS, _SAMPLES, _BITS_ALLOCATED, _BITS_STORED, _PIXEL_REPRESENTATION})
_TEXTS = frozenset({_PHOTOMETRIC, _WINDOW_CENTER, _WINDOW_WIDTH, _INTERCEPT, _SLOPE, _VOI_LUT_FUNCTION})


def _attributes(head: bytes, implicit: bool) -> Found | None:
    """The group 0028 values this module uses, as text (US as decimal), from the data set after
    the File Meta group (whose first element gives its length, PS3.10 §7.1); None for a
    lookup-table sequence or bytes the walk cannot read."""
    start = 132 if head[128:132] == b"DICM" else 0
    try:
        group, element, vr, _, length = _GROUP_LENGTH.unpack_from(head, start)
        if (group, element, vr) != (2, 0, b"UL"):
            return None
        elements = scan.elements(head, start + 12 + length, implicit, last_group=0x0028)
    except (struct.error, scan.Unreadable):
        return None
    if any(tag in elements for tag in _LUT_SEQUENCES):
        return None
    found: Found = {}
    for tag, (_, length, offset) in elements.items():
        if tag in _NUMBERS:
            found[tag] = str(int.from_bytes(head[offset : offset + 2], "little")) if length == 2 else ""
        elif tag in _TEXTS:
            found[tag] = head[offset : offset + length].decode("latin-1").strip(" \x00")
    return found


def _plain(found: Found, frame_length: int) -> tuple[Layout, Greyscale] | None:
    """How an 8- or 16-bit single-sample greyscale frame lies, and what displays it."""
    try:
        rows, columns = int(found[_ROWS]), int(found[_COLUMNS])
        bits, stored = int(found[_BITS_ALLOCATED]), int(found[_BITS_STORED])
        signed, samples = int(found[_PIXEL_REPRESENTATION]), int(found.get(_SAMPLES) or 1)
        rescale = None
        if _SLOPE in found and _INTERCEPT in found:
            rescale = (float(found[_SLOPE]), float(found[_INTERCEPT]))
    except (KeyError, ValueError):
        return None
    if (
        bits not in (8, 16)
        or not 0 < stored <= bits
        or signed not in (0, 1)
        or samples != 1
        or found.get(_PHOTOMETRIC) not in MONOCHROME
        or rows * columns * bits // 8 != frame_length
    ):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return (dtype, rows, columns, bits - stored), Greyscale(
        found[_PHOTOMETRIC], rescale, _first_window(found)
    )


def _first_window(found: Found) -> tuple[float, float, str] | None:
    """Multi-valued windows count by their first value, as with pydicom (PS3.3 §C.11.2.1.2)."""
    if _WINDOW_CENTER not in found or _WINDOW_WIDTH not in found:
        return None
    try:
        center, width = found[_WINDOW_CENTER].split("\\")[0], found[_WINDOW_WIDTH].split("\\")[0]
        return _window(center, width, found.get(_VOI_LUT_FUNCTION))
    except ValueError:
        return None
