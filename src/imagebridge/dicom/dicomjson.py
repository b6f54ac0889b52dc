"""DICOM JSON (PS3.18 Annex F) without reading large values into memory.

Values longer than the bulk data threshold, and every deferred value, become a
``BulkDataURI`` (PS3.18 §F.2.6) that points into this archive. The URI is
written with the placeholder prefix :data:`BASE` so that the stored text can be
served under any base URL with one string replacement.
"""

from __future__ import annotations

import base64
import logging
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

BASE = "ibx:"
"""Stands for the DICOMweb base URL in stored BulkDataURIs."""

BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_SKIPPED = frozenset({0xFFFCFFFC, 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD})

UriFor = Callable[[str], str]


def dataset_to_json(ds: Dataset, uri_for: UriFor, threshold: int, path: str = "") -> dict[str, Any]:
    """The DICOM JSON object of ``ds``; ``uri_for(tag_path)`` names a bulk value's URI."""
    out: dict[str, Any] = {}
    for tag in list(ds.keys()):
        if tag in _SKIPPED or tag.group == 0x0002 or (tag.element == 0 and tag.group > 0x0008):
            continue
        key = f"{tag:08X}"
        tag_path = f"{path}{key}"
        try:
            value = _element_json(ds, int(tag), tag_path, uri_for, threshold)
        except Exception as exc:  # tolerant on read: one odd value must not lose the instance
            log.warning("attribute %s left out of metadata: %s", key, exc)
            continue
        if value is not None:
            out[key] = value
    return out


def _element_json(ds: Dataset, tag: int, tag_path: str, uri_for: UriFor, threshold: int) -> dict[str, Any]:
    raw = ds.get_item(tag, keep_deferred=True)
    if isinstance(raw, RawDataElement) and raw.value is not None:
        fast = _raw_json(raw)
        if fast is not None:
            return fast
    if isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, 0xFFFFFFFF):
        return {"vr": _vr_of(raw), "BulkDataURI": uri_for(tag_path)}
    if isinstance(raw, RawDataElement) and raw.value is None and tag == 0x7FE00010:
        return {"vr": _vr_of(raw), "BulkDataURI": uri_for(tag_path)}
    elem = ds[tag]
    if elem.VR == "SQ":
        items = [
            dataset_to_json(item, uri_for, threshold, f"{tag_path}.{index}.")
            for index, item in enumerate(elem.value or [])
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if elem.VR in BULK_VRS or tag == 0x7FE00010:
        return _binary_json(elem, tag_path, uri_for, threshold)
    return elem.to_json_dict(None, threshold)


# The raw-value fast path: the common value representations are turned into DICOM JSON straight
# from their bytes, as pydicom would (the same decoding, splitting and stripping; the test
# compares both on every sample file), without building pydicom elements first. That walk was
# most of the CPU time of ingest. Anything else (PN, AT, sequences, bulk data, implicit private
# tags, IS and DS that are not plain numbers, text outside ASCII or with ISO 2022 escapes) still
# goes through pydicom.
_MULTI_STRING = frozenset({"AS", "CS", "DA", "DT", "TM"})
_TEXT_MULTI = frozenset({"SH", "LO", "UC"})
_TEXT_SINGLE = frozenset({"LT", "ST", "UT"})
_NUMBERS = {
    vr: (code, struct.calcsize(code))
    for vr, code in {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}.items()
}
"""struct code and size of each binary number VR."""
_FAST_VRS = _MULTI_STRING | _TEXT_MULTI | _TEXT_SINGLE | frozenset(_NUMBERS) | {"AE", "UI", "UR", "IS", "DS"}
_DECIMAL = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _raw_json(raw: RawDataElement) -> dict[str, Any] | None:
    """The DICOM JSON of a raw element whose value pydicom would convert plainly; None otherwise."""
    vr = raw.VR
    if vr is None:
        if raw.tag.is_private:
            return None
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    if raw.value is None:
        return None
    return value_json(vr, raw.value, raw.is_little_endian)


def value_json(vr: str, value: bytes, little_endian: bool) -> dict[str, Any] | None:
    """The DICOM JSON of a value of ``vr`` from its bytes; None when pydicom must convert it."""
    if vr not in _FAST_VRS or (vr in _MULTI_STRING and config.datetime_conversion):
        return None
    number = _NUMBERS.get(vr)
    if number is not None:
        code, size = number
        if len(value) % size:
            return None
        if not value:
            return {"vr": vr}
        order = "<" if little_endian else ">"
        return {"vr": vr, "Value": list(struct.unpack(f"{order}{len(value) // size}{code}", value))}
    if vr in _TEXT_MULTI or vr in _TEXT_SINGLE:
        if not value.isascii() or b"\x1b" in value:
            return None  # the character set decides; pydicom knows them all
        text = value.decode("ascii")
    else:
        text = value.decode("latin-1")  # pydicom's default encoding for these VRs
    if vr == "DS" or vr == "IS":
        return _number_strings(vr, text)
    if vr in _MULTI_STRING:
        items = text.rstrip(" \x00").split("\\")
    elif vr == "UI":
        items = text.rstrip("\x00 ").split("\\")
    elif vr == "AE":
        items = [item.strip() for item in text.split("\\")]
    elif vr == "UR":
        items = [text.rstrip()]
    elif vr in _TEXT_MULTI:
        items = [item.rstrip("\x00 ") for item in text.split("\\")]
    else:
        items = [text.rstrip("\x00 ")]
    if len(items) == 1 and not items[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": items}


def _number_strings(vr: str, text: str) -> dict[str, Any] | None:
    """IS and DS values as JSON numbers; None (pydicom decides) for anything but plain numbers."""
    items = (text.strip() if vr == "DS" else text).rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0]:
        return {"vr": vr}
    pattern, number = (_DECIMAL, float) if vr == "DS" else (_INTEGER, int)
    if not all(pattern.fullmatch(item) for item in items):
        return None
    return {"vr": vr, "Value": [number(item) for item in items]}


def _binary_json(elem: DataElement, tag_path: str, uri_for: UriFor, threshold: int) -> dict[str, Any]:
    data = elem.value
    if data is None or data == b"":
        return {"vr": elem.VR}
    if isinstance(data, bytes | bytearray) and len(data) <= threshold and elem.tag != 0x7FE00010:
        return {"vr": elem.VR, "InlineBinary": base64.b64encode(data).decode("ascii")}
    return {"vr": elem.VR, "BulkDataURI": uri_for(tag_path)}


def _vr_of(raw: RawDataElement) -> str:
    if raw.VR and raw.VR not in ("OB or OW", "US or SS", "US or OW", "US or SS or OW"):
        return str(raw.VR)
    if raw.tag == 0x7FE00010:
        return "OW"
    try:
        vr = dictionary_VR(raw.tag)
    except KeyError:
        return "UN"
    return "OW" if "O" in vr and " or " in vr else vr.split(" or ")[0]
