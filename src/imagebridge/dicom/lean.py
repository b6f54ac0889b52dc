"""A lean walk over the common Part 10 file for ingest: explicit VR little endian.

pydicom builds a Dataset of element objects and then our DICOM JSON walk reads them back; for the
usual CT or MR slice that was most of the CPU time of storing an instance. This module reads the
same file straight into DICOM JSON (PS3.18 Annex F), with the same values the pydicom path gives
(the raw-value conversions of :mod:`imagebridge.dicom.dicomjson` are shared, and a test compares
both paths on every sample file).

It handles only what it can give exactly as pydicom would: explicit VR little endian data (the
uncompressed syntax and the encapsulated ones), elements in ascending order, the value
representations of the DICOM JSON fast path plus PN, sequences and binary values. Anything else
(implicit VR, big endian, deflate, UN, AT, text outside ASCII, odd lengths, a damaged file) makes
:func:`walk` return None, and the caller takes the pydicom path, which reads everything.
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.uid import UID, ExplicitVRLittleEndian

from imagebridge.dicom import dicomjson, frames

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
"""Explicit VRs whose length is 4 bytes after 2 reserved ones (PS3.5 Table 7.1-1)."""
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD"})

_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_SKIPPED = frozenset({0xFFFCFFFC})
_WINDOW = 16 * 1024

_unpack_tag = struct.Struct("<HH").unpack_from
_unpack_short = struct.Struct("<H").unpack_from
_unpack_long = struct.Struct("<L").unpack_from


class _Unsupported(Exception):
    """The file holds something this walk does not convert exactly as pydicom does."""


@dataclass
class Walked:
    """What ingest needs of one file, read by the lean walk."""

    transfer_syntax: str
    media_sop_class_uid: str
    metadata: dict[str, Any]
    person_names: dict[str, list[str]]
    """The values of each top-level PN element by JSON key, as pydicom's ``str`` gives them."""
    pixel: tuple[int, int] | None = None
    """The top-level pixel data value: where it starts and its length (undefined: encapsulated)."""
    fragments: list[frames.Fragment] | None = None
    """The items of encapsulated pixel data, Basic Offset Table first, as the walk passed them."""
    bulk: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """Each BulkDataURI to fill in once the UIDs are known: the element and its tag path."""

    def name_bulk_data(self, uri_for: dicomjson.UriFor) -> None:
        for element, tag_path in self.bulk:
            element["BulkDataURI"] = uri_for(tag_path)


def walk(
    path: Path, defer_size: int, threshold: int, head: bytes | None = None, size: int | None = None
) -> Walked | None:
    """The lean reading of ``path``, or None when the pydicom path must read it.

    ``head`` (the file's first bytes, still in memory after receiving them) and ``size`` spare
    reading the file at all when the elements end within ``head`` or with the pixel data."""
    walker = _Walk(path, defer_size, threshold, head, size)
    try:
        return walker.run()
    except (_Unsupported, OSError, struct.error, UnicodeDecodeError, ValueError, IndexError):
        return None
    finally:
        walker.close()


class _Walk:
    def __init__(
        self, path: Path, defer_size: int, threshold: int, head: bytes | None, size: int | None
    ) -> None:
        self.path, self.defer_size, self.threshold = path, defer_size, threshold
        self.fp: BinaryIO | None = None
        self.buf, self.base, self.size = head or b"", 0, size or 0
        if head is None or size is None:
            self.size = os.stat(path).st_size
            self.buf = self._file().read(_WINDOW)
        self.bulk: list[tuple[dict[str, Any], str]] = []
        self.person_names: dict[str, list[str]] = {}
        self.pixel: tuple[int, int] | None = None
        self.fragments: list[frames.Fragment] | None = None

    def _file(self) -> BinaryIO:
        if self.fp is None:
            self.fp = self.path.open("rb")
        return self.fp

    def close(self) -> None:
        if self.fp is not None:
            self.fp.close()

    def _bytes(self, pos: int, n: int) -> tuple[bytes, int]:
        """A buffer and the offset in it where the ``n`` bytes at file position ``pos`` start."""
        off = pos - self.base
        if off >= 0 and off + n <= len(self.buf):
            return self.buf, off
        if pos + n > self.size:
            raise _Unsupported("truncated")
        fp = self._file()
        fp.seek(pos)
        self.buf, self.base = fp.read(max(n, _WINDOW)), pos
        if len(self.buf) < n:
            raise _Unsupported("truncated")
        return self.buf, 0

    def _value(self, pos: int, n: int) -> bytes:
        buf, off = self._bytes(pos, n)
        return buf[off : off + n]

    def run(self) -> Walked:
        pos, meta = self._file_meta()
        syntax = meta.get(0x00020010, "")
        if not _explicit_little_endian(syntax):
            raise _Unsupported(f"transfer syntax {syntax}")
        metadata, _ = self._dataset(pos, self.size, "", top=True)
        return Walked(
            syntax,
            meta.get(0x00020002, ""),
            metadata,
            self.person_names,
            pixel=self.pixel,
            fragments=self.fragments,
            bulk=self.bulk,
        )

    def _file_meta(self) -> tuple[int, dict[int, str]]:
        """The File Meta group's UIDs and where the data set starts (preamble optional, as
        ``parse.read_stored`` reads it)."""
        buf, _ = self._bytes(0, 8)
        if buf[128:132] == b"DICM":
            pos = 132
        elif starts_with_file_meta(buf):
            pos = 0
        else:
            raise _Unsupported("no DICM prefix")
        meta: dict[int, str] = {}
        while pos + 8 <= self.size:
            buf, off = self._bytes(pos, 8)
            group, element = _unpack_tag(buf, off)
            if group != 0x0002:
                break
            vr = buf[off + 4 : off + 6]
            pos, length = self._length(pos, vr)
            if length == _UNDEFINED:
                raise _Unsupported("undefined length in the file meta")
            if vr == b"UI":
                meta[group << 16 | element] = self._value(pos, length).decode("ascii").rstrip("\x00 ")
            pos += length
        if 0x00020010 not in meta:
            raise _Unsupported("no transfer syntax")
        return pos, meta

    def _length(self, pos: int, vr: bytes) -> tuple[int, int]:
        """The value's position and length of the explicit VR element header at ``pos``."""
        if vr in _LONG_VRS:
            buf, off = self._bytes(pos, 12)
            return pos + 12, _unpack_long(buf, off + 8)[0]
        buf, off = self._bytes(pos, 8)
        return pos + 8, _unpack_short(buf, off + 6)[0]

    def _dataset(self, pos: int, end: int, path: str, top: bool = False) -> tuple[dict[str, Any], int]:
        """The DICOM JSON of the elements from ``pos`` up to ``end`` (or up to an item delimiter
        when ``end`` is undefined); returns it and the position after it."""
        out: dict[str, Any] = {}
        last = -1
        while pos < end:
            if end == _UNDEFINED and pos >= self.size:
                raise _Unsupported("item without its delimiter")
            buf, off = self._bytes(pos, 8)
            group, element = _unpack_tag(buf, off)
            tag = group << 16 | element
            if group == 0xFFFE:
                if tag == _ITEM_END and end == _UNDEFINED:
                    return out, pos + 8
                raise _Unsupported(f"item tag {tag:08X} inside a data set")
            if tag <= last:
                raise _Unsupported("elements out of order")
            last = tag
            vr_bytes = buf[off + 4 : off + 6]
            value_pos, length = self._length(pos, vr_bytes)
            vr = vr_bytes.decode("ascii")
            key = f"{tag:08X}"
            keep = tag not in _SKIPPED and group != 0x0002 and not (element == 0 and group > 0x0008)
            if vr == "SQ":
                if top and length != _UNDEFINED and length > self.defer_size:
                    json, pos = self._deferred(vr, key, path), value_pos + length
                else:
                    json, pos = self._sequence(value_pos, length, f"{path}{key}")
            elif length == _UNDEFINED:
                if not (top and tag == _PIXEL_DATA and vr in ("OB", "OW")):
                    raise _Unsupported("undefined length outside pixel data")
                self.pixel = (value_pos, length)
                json, pos = self._deferred(vr, key, path), self._after_fragments(value_pos)
            else:
                pos = value_pos + length
                if top and tag == _PIXEL_DATA:
                    self.pixel = (value_pos, length)
                if top and length > self.defer_size and tag != _CHARSET:
                    json = self._deferred(vr, key, path)
                else:
                    json = self._element(tag, vr, key, path, value_pos, length, top)
            if keep:
                out[key] = json
        if end != _UNDEFINED and pos != end:
            raise _Unsupported("an element runs past its item")
        return out, pos

    def _deferred(self, vr: str, key: str, path: str) -> dict[str, Any]:
        element: dict[str, Any] = {"vr": vr}
        self.bulk.append((element, f"{path}{key}"))
        return element

    def _element(
        self, tag: int, vr: str, key: str, path: str, pos: int, length: int, top: bool
    ) -> dict[str, Any]:
        if vr in _BINARY_VRS:
            if length == 0:
                return {"vr": vr}
            if length <= self.threshold and tag != _PIXEL_DATA:
                return {"vr": vr, "InlineBinary": base64.b64encode(self._value(pos, length)).decode("ascii")}
            return self._deferred(vr, key, path)
        if vr == "PN":
            return self._person_name(key, self._value(pos, length), top)
        if vr not in _TEXT_VRS and vr not in _NUMBER_VRS:
            raise _Unsupported(f"VR {vr}")
        json = dicomjson.value_json(vr, self._value(pos, length), True)
        if json is None:
            raise _Unsupported(f"a {vr} value pydicom converts its own way")
        return json

    def _person_name(self, key: str, value: bytes, top: bool) -> dict[str, Any]:
        """PN as pydicom gives it for ASCII names: values split at ``\\``, components at ``=``
        with empty trailing components dropped (PS3.18 §F.2.2)."""
        if not value.isascii() or b"\x1b" in value:
            raise _Unsupported("a PN value outside ASCII")
        text = value.rstrip(b"\x00 ").decode("ascii")
        if not text:
            if top:
                self.person_names[key] = []
            return {"vr": "PN"}
        names = []
        for name in text.split("\\"):
            components = name.split("=")
            while components and not components[-1]:
                components.pop()
            if not components:
                raise _Unsupported("a PN value without components")
            names.append(components)
        if top:
            self.person_names[key] = ["=".join(c) for c in names]
        value_json = []
        for components in names:
            item = {"Alphabetic": components[0]}
            if len(components) > 1:
                item["Ideographic"] = components[1]
            if len(components) > 2:
                item["Phonetic"] = components[2]
            if len(components) > 3:
                raise _Unsupported("a PN value with more than three component groups")
            value_json.append(item)
        return {"vr": "PN", "Value": value_json}

    def _sequence(self, pos: int, length: int, path: str) -> tuple[dict[str, Any], int]:
        end = _UNDEFINED if length == _UNDEFINED else pos + length
        items: list[dict[str, Any]] = []
        while end == _UNDEFINED or pos < end:
            buf, off = self._bytes(pos, 8)
            group, element = _unpack_tag(buf, off)
            tag = group << 16 | element
            item_length = _unpack_long(buf, off + 4)[0]
            if tag == _SEQUENCE_END and end == _UNDEFINED:
                pos += 8
                break
            if tag != _ITEM:
                raise _Unsupported(f"{tag:08X} where a sequence item should be")
            item_end = _UNDEFINED if item_length == _UNDEFINED else pos + 8 + item_length
            item, pos = self._dataset(pos + 8, item_end, f"{path}.{len(items)}.")
            items.append(item)
        if end != _UNDEFINED and pos != end:
            raise _Unsupported("an item runs past its sequence")
        return ({"vr": "SQ", "Value": items} if items else {"vr": "SQ"}), pos

    def _after_fragments(self, pos: int) -> int:
        """The position after encapsulated pixel data (its items, kept for the frame index, then
        the sequence delimiter)."""
        self.fragments = []
        while True:
            buf, off = self._bytes(pos, 8)
            group, element = _unpack_tag(buf, off)
            tag = group << 16 | element
            length = _unpack_long(buf, off + 4)[0]
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise _Unsupported("encapsulated pixel data without its items")
            self.fragments.append(frames.Fragment(pos + 8, length))
            pos += 8 + length
            if pos > self.size:
                raise _Unsupported("truncated pixel data")


def starts_with_file_meta(head: bytes) -> bool:
    """Whether a file starts with its File Meta group, with no preamble and ``DICM``: what pydicom
    and dicomweb-client write for datasets built in memory. Tolerant on read."""
    return head[:2] == b"\x02\x00" and head[4:6].isalpha() and head[4:6].isupper()


def _explicit_little_endian(syntax: str) -> bool:
    """Whether data in ``syntax`` is explicit VR little endian and not deflated."""
    if syntax == ExplicitVRLittleEndian:
        return True
    uid = UID(syntax)
    if not uid.is_transfer_syntax or uid.is_private:
        return False
    return uid.is_little_endian and not uid.is_implicit_VR and not uid.is_deflated
