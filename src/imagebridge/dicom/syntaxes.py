"""Transfer syntaxes and media types (PS3.5 §10, PS3.18 §8.7.3)."""

from __future__ import annotations

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})
"""Uncompressed syntaxes whose frames sit at fixed offsets in the file."""

DEFAULT_SYNTAX = ExplicitVRLittleEndian
"""PS3.18 §8.7.3.5.2: the default for application/dicom and uncompressed bulk data."""

FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
"""PS3.18 Table 8.7.3-2: the media type of a compressed frame in each transfer syntax."""


def frame_media_type(syntax: str) -> str:
    """The media type a stored frame has in its own transfer syntax."""
    return FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


def is_native(syntax: str) -> bool:
    return syntax in NATIVE_SYNTAXES


def is_deflated(syntax: str) -> bool:
    return syntax == DeflatedExplicitVRLittleEndian
