"""Encode a DICOMDIR (PS3.10 §8, PS3.3 Annex F) from directory records built in memory.

pydicom's ``FileSet`` writes a DICOMDIR only together with copies of the instances; a PDI zip is
streamed from stored blobs, so the DICOMDIR is encoded here on its own: records in depth-first
order, each record an explicit VR little endian item of defined length, and the byte offsets
(PS3.3 §F.3.2.2, counted from the first byte of the file preamble) filled in a second pass —
every offset is a fixed-size UL, so the first pass already fixes every position.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, MediaStorageDirectoryStorage, generate_uid

from imagebridge import __version__

IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["imagebridge implementation class"])
"""Identifies the software that wrote a DICOMDIR (PS3.7 §D.3.3.2); a fixed UID under pydicom's root."""
IMPLEMENTATION_VERSION = f"IMAGEBRIDGE{__version__}"[:16]


@dataclass
class Record:
    """A directory record (its type and keys, without the offset elements) and its lower level."""

    ds: Dataset
    children: list[Record] = field(default_factory=list)


def encode(file_set_id: str, roots: list[Record], instance_uid: str) -> bytes:
    """The DICOMDIR file of a file set whose root directory entity holds ``roots``."""
    ordered = _depth_first(roots)
    for record in ordered:
        _set_links(record, {})
    head = _head(instance_uid)
    top = _top(file_set_id, 0, 0)
    position = len(head) + len(top) + 12
    offsets: dict[int, int] = {}
    encoded: list[bytearray] = []
    for record in ordered:
        offsets[id(record)] = position
        encoded.append(bytearray(_encoded(record.ds)))
        position += 8 + len(encoded[-1])
    links = _sibling_links(roots, offsets)
    items: list[bytes] = []
    for record, content in zip(ordered, encoded, strict=True):
        link = links.get(id(record), {})
        _patch_links(content, link.get("next", 0), link.get("lower", 0))
        items += [struct.pack("<HHI", 0xFFFE, 0xE000, len(content)), bytes(content)]
    first = offsets[id(roots[0])] if roots else 0
    last = offsets[id(roots[-1])] if roots else 0
    sequence = struct.pack("<HH2sHI", 0x0004, 0x1220, b"SQ", 0, 0xFFFFFFFF) + b"".join(items)
    return head + _top(file_set_id, first, last) + sequence + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _depth_first(records: list[Record]) -> list[Record]:
    out: list[Record] = []
    for record in records:
        out.append(record)
        out.extend(_depth_first(record.children))
    return out


def _sibling_links(records: list[Record], offsets: dict[int, int]) -> dict[int, dict[str, int]]:
    links: dict[int, dict[str, int]] = {}
    for index, record in enumerate(records):
        following = records[index + 1] if index + 1 < len(records) else None
        links[id(record)] = {
            "next": offsets[id(following)] if following else 0,
            "lower": offsets[id(record.children[0])] if record.children else 0,
        }
        links.update(_sibling_links(record.children, offsets))
    return links


_LINKS_LAYOUT = struct.Struct("<HH2sHIHH2sHHHH2sHI")
"""(0004,1400) UL, (0004,1410) US, (0004,1420) UL: the first 34 bytes of every encoded record."""


def _patch_links(content: bytearray, following: int, lower: int) -> None:
    """Write the two offsets into a record encoded with zeros (same length: UL is fixed size)."""
    fields = list(_LINKS_LAYOUT.unpack_from(content))
    if fields[:4] != [0x0004, 0x1400, b"UL", 4] or fields[5:9] != [0x0004, 0x1410, b"US", 2]:
        raise AssertionError("a directory record does not start with its link elements")
    if fields[10:14] != [0x0004, 0x1420, b"UL", 4]:
        raise AssertionError("a directory record does not start with its link elements")
    struct.pack_into("<I", content, 8, following)
    struct.pack_into("<I", content, 30, lower)


def _set_links(record: Record, link: dict[str, int]) -> None:
    record.ds.OffsetOfTheNextDirectoryRecord = link.get("next", 0)
    record.ds.RecordInUseFlag = 0xFFFF
    record.ds.OffsetOfReferencedLowerLevelDirectoryEntity = link.get("lower", 0)


def _encoded(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _head(instance_uid: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + fp.getvalue()


def _top(file_set_id: str, first: int, last: int) -> bytes:
    ds = Dataset()
    ds.FileSetID = file_set_id
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last
    ds.FileSetConsistencyFlag = 0
    return _encoded(ds)
