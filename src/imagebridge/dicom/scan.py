"""Top-level elements of a little endian data set, read straight from its bytes (PS3.5 §7.1, §7.5).

For the handful of attributes one request needs from a stored file (rendering needs group 0028)
this is several times cheaper than pydicom's reader, which makes an element of everything.
Sequences are stepped over, never read. Whatever the walk does not understand ends it with
:class:`Unreadable`, and the caller reads the file with pydicom instead.
"""

from __future__ import annotations

import struct

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
"""VRs with a 4-byte length after 2 reserved bytes (PS3.5 Table 7.1-1)."""

UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TAG_LENGTH = struct.Struct("<HHL")
_TAG_VR_SHORT = struct.Struct("<HH2sH")


class Unreadable(ValueError):
    """The bytes are not a data set this walk reads."""


RawElement = tuple[str | None, int, int]
"""VR (None in implicit VR), value length (``UNDEFINED`` for an undefined-length sequence),
offset of the value."""


def elements(data: bytes, start: int, implicit: bool, last_group: int) -> dict[int, RawElement]:
    """Every top-level element from ``start`` up to the end of group ``last_group`` (or of the
    data); the values of sequences are stepped over."""
    found: dict[int, RawElement] = {}
    position = start
    while position < len(data):
        tag, vr, length, position = _header(data, position, implicit)
        if tag >> 16 > last_group:
            break
        found[tag] = (vr, length, position)
        try:
            position = _after_value(data, position, length, implicit or vr == "UN")
        except RecursionError as exc:
            raise Unreadable(f"sequences nest too deeply in ({tag >> 16:04X},{tag & 0xFFFF:04X})") from exc
    return found


def _header(data: bytes, position: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR, length, offset of the value) of the element at ``position``."""
    try:
        if implicit or data[position : position + 2] == b"\xfe\xff":
            group, element, length = _TAG_LENGTH.unpack_from(data, position)
            return group << 16 | element, None, length, position + 8
        group, element, vr, length = _TAG_VR_SHORT.unpack_from(data, position)
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<L", data, position + 8)
            return group << 16 | element, vr.decode(), length, position + 12
    except struct.error as exc:
        raise Unreadable(f"the data set ends inside an element header at {position}") from exc
    if not vr.isalpha() or not vr.isupper():
        raise Unreadable(f"element ({group:04X},{element:04X}) has no valid VR")
    return group << 16 | element, vr.decode(), length, position + 8


def _after_value(data: bytes, position: int, length: int, implicit: bool) -> int:
    """Where the next element starts: past the value, or past an undefined-length sequence."""
    if length != UNDEFINED:
        if position + length > len(data):
            raise Unreadable("a value runs past the end of the data")
        return position + length
    while True:
        tag, _, item_length, position = _header(data, position, True)
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise Unreadable(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) found where a sequence item belongs")
        position = _after_item(data, position, item_length, implicit)


def _after_item(data: bytes, position: int, length: int, implicit: bool) -> int:
    if length != UNDEFINED:
        return _after_value(data, position, length, implicit)
    while True:
        tag, vr, element_length, position = _header(data, position, implicit)
        if tag == _ITEM_END:
            return position
        position = _after_value(data, position, element_length, implicit or vr == "UN")
