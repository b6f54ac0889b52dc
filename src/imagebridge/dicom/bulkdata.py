"""Bulk data values named by the tag paths of our BulkDataURIs (PS3.18 §8.6.2, §F.2.6).

A path is ``7FE00010`` or, inside sequences, ``00540016.0.00181072``: tags (8 hex digits)
alternating with 0-based item indices. Values are returned as Explicit VR Little Endian
would hold them (PS3.18 §8.7.3.5.2), so big endian words are swapped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import EXPLICIT_VR_LENGTH_32, write_data_element
from pydicom.uid import ExplicitVRBigEndian

from imagebridge.dicom.parse import read_stored
from imagebridge.errors import InvalidInput, NotFound

PIXEL_DATA = 0x7FE00010
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_WORD_SIZE = {
    "OW": 2,
    "US": 2,
    "SS": 2,
    "OF": 4,
    "FL": 4,
    "OL": 4,
    "UL": 4,
    "SL": 4,
    "OD": 8,
    "FD": 8,
    "OV": 8,
}


@dataclass(frozen=True)
class TagPath:
    """Item indices and tags from the top-level dataset down to one element."""

    steps: tuple[tuple[int, int], ...]
    """(tag of a sequence, item index) for each sequence passed through."""
    tag: int

    @property
    def is_pixel_data(self) -> bool:
        return not self.steps and self.tag == PIXEL_DATA

    def __str__(self) -> str:
        inner = "".join(f"{tag:08X}.{index}." for tag, index in self.steps)
        return f"{inner}{self.tag:08X}"


def parse_tag_path(text: str) -> TagPath:
    items = text.split(".")
    tags, indices = items[0::2], items[1::2]
    if len(items) % 2 == 0 or not all(_TAG.match(t) for t in tags) or not all(i.isdecimal() for i in indices):
        raise InvalidInput(
            f"bulk data path {text!r} is malformed: expected tags of 8 hex digits, with item numbers "
            "between them for sequences (e.g. 7FE00010 or 00540016.0.00181072)"
        )
    steps = tuple((int(t, 16), int(i)) for t, i in zip(tags[:-1], indices, strict=True))
    return TagPath(steps, int(tags[-1], 16))


def element_bytes(path: Path, tag_path: TagPath) -> bytes:
    """The value of the element at ``tag_path`` as little endian bytes; NotFound if absent."""
    ds = read_stored(path)
    big_endian = ds.file_meta.get("TransferSyntaxUID") == ExplicitVRBigEndian
    elem = _find(ds, tag_path)
    value = elem.value
    if value is None or value == b"":
        return b""
    if isinstance(value, bytes | bytearray):
        size = _WORD_SIZE.get(elem.VR, 1)
        if big_endian and size > 1 and len(value) % size == 0:
            return np.frombuffer(value, f">u{size}").astype(f"<u{size}").tobytes()
        return bytes(value)
    return _encoded(elem)


def _find(ds: Dataset, tag_path: TagPath) -> DataElement:
    current = ds
    for tag, index in tag_path.steps:
        if tag not in current or current[tag].VR != "SQ" or index >= len(current[tag].value or []):
            raise NotFound(f"bulk data {tag_path} does not exist in this instance")
        current = current[tag].value[index]
    if tag_path.tag not in current:
        raise NotFound(f"bulk data {tag_path} does not exist in this instance")
    return current[tag_path.tag]


def _encoded(elem: DataElement) -> bytes:
    """A non-binary value (a long text, a list of numbers) encoded as Explicit VR Little Endian."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem)
    header = 12 if elem.VR in EXPLICIT_VR_LENGTH_32 else 8
    return fp.getvalue()[header:]
