"""Accept header negotiation for DICOMweb (PS3.18 §8.7: media types, q-values, transfer-syntax).

Clients write the same thing many ways: ``type="application/dicom"`` quoted or not,
``transfer-syntax=*``, several ranges with q-values, ``*/*``. This module reads
them all into :class:`MediaRange` values and picks the best acceptable offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.uid import UID

from imagebridge.dicom import syntaxes
from imagebridge.errors import NotAcceptable


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header; for multipart ranges, ``inner`` is the ``type`` parameter."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart/related"

    @property
    def inner(self) -> str:
        return self.params.get("type", "*/*") if self.is_multipart else self.type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse(header: str | None) -> list[MediaRange]:
    """Every media range in ``header``, best first (stable for equal q). Empty header: ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for entry in _split(header, ","):
        pieces = _split(entry, ";")
        media = pieces[0].lower()
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"').strip()
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            else:
                params[name] = value.lower() if name == "type" else value
        if q > 0:
            ranges.append(MediaRange(media, params, q))
    return sorted(ranges, key=lambda r: -r.q)


def matches(pattern: str, media: str) -> bool:
    if pattern in ("*/*", "*", media):
        return True
    major, _, minor = pattern.partition("/")
    return minor == "*" and media.split("/")[0] == major


@dataclass(frozen=True)
class Choice:
    """What to send: a single-part or multipart response with parts of ``media_type``."""

    multipart: bool
    media_type: str
    transfer_syntax: str | None


def choose(
    ranges: Sequence[MediaRange],
    offers: Sequence[str],
    *,
    multipart_only: bool = False,
    single_ok: Sequence[str] = (),
) -> Choice:
    """The first acceptable offer for the best-ranked range.

    ``offers`` are part media types in our order of preference; ``single_ok`` are
    those that may also be sent as a single-part body. ``*/*`` and bare
    ``multipart/related`` select our first offer.
    """
    for media_range in ranges:
        if media_range.is_multipart:
            for offer in offers:
                if matches(media_range.inner, offer):
                    return Choice(True, offer, media_range.transfer_syntax)
            continue
        if media_range.type in ("*/*", "multipart/*"):
            return Choice(
                offers[0] not in single_ok or multipart_only, offers[0], media_range.transfer_syntax
            )
        for offer in single_ok:
            if matches(media_range.type, offer) and not multipart_only:
                return Choice(False, offer, media_range.transfer_syntax)
    wanted = ", ".join(_show(r) for r in ranges)
    raise NotAcceptable(
        f"none of the requested media types ({wanted}) can be served here; available: {', '.join(offers)}"
    )


def _show(media_range: MediaRange) -> str:
    if media_range.is_multipart:
        return f"multipart/related; type={media_range.inner}"
    return media_range.type


OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class PixelChoice:
    """How to send frames (or encapsulated pixel data): each part's media type and transfer
    syntax, and whether the stored frames must be decoded to native little endian first."""

    multipart: bool
    media_type: str
    transfer_syntax: str
    decode: bool

    @property
    def part_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def choose_pixels(
    ranges: Sequence[MediaRange], stored_syntax: str, *, single_ok: bool = False
) -> PixelChoice:
    """The best way to send frames stored in ``stored_syntax`` (PS3.18 §8.7.3.5, Table 8.7.3-5).

    ``application/octet-stream`` without a transfer-syntax means Explicit VR Little Endian, so
    compressed frames are decoded for it; ``transfer-syntax=*`` or the stored one keeps the
    stored bytes; ``*/*`` and the frame's own media type (``image/jpeg`` ...) send them as
    stored. ``single_ok`` lets a non-multipart range ask for a single-part body.
    """
    for media_range in ranges:
        multipart = media_range.is_multipart or media_range.type in ("*/*", "multipart/*")
        if not multipart and not single_ok:
            continue
        fit = _fit_pixels(media_range.inner, media_range.transfer_syntax, stored_syntax)
        if fit is not None:
            media, syntax, decode = fit
            return PixelChoice(multipart, media, syntax, decode)
    raise NotAcceptable(
        f"none of the requested media types ({', '.join(_show(r) for r in ranges)}) fits pixel data "
        f"stored in {_syntax_name(stored_syntax)}; available: {_pixel_offers(stored_syntax)}"
    )


def _fit_pixels(inner: str, wanted: str | None, stored: str) -> tuple[str, str, bool] | None:
    native = syntaxes.DEFAULT_SYNTAX
    if not syntaxes.FRAME_MEDIA_TYPES.get(stored):
        ok = matches(inner, OCTET_STREAM) and wanted in (None, "*", native, stored)
        return (OCTET_STREAM, native, False) if ok else None
    media = syntaxes.frame_media_type(stored)
    if inner == OCTET_STREAM:
        if wanted in ("*", stored):
            return OCTET_STREAM, stored, False
        return (OCTET_STREAM, native, True) if wanted in (None, native) else None
    if not matches(inner, media):
        return None
    if wanted in (None, "*", stored):
        return media, stored, False
    if wanted == native and inner in ("*/*", "*"):
        return OCTET_STREAM, native, True
    return None


def _pixel_offers(stored: str) -> str:
    octet = f'multipart/related; type="{OCTET_STREAM}" (Explicit VR Little Endian)'
    media = syntaxes.FRAME_MEDIA_TYPES.get(stored)
    if media is None:
        return octet
    return f'multipart/related; type="{media}" (as stored, transfer-syntax={stored}), {octet}'


def _syntax_name(syntax: str) -> str:
    uid = UID(syntax)
    return f"{uid.name} ({syntax})" if uid.is_transfer_syntax else syntax


def dicom_syntaxes(ranges: Sequence[MediaRange]) -> list[str | None]:
    """The transfer syntaxes asked for application/dicom parts, best first (None: no parameter)."""
    wanted: list[str | None] = []
    for media_range in ranges:
        if (
            media_range.is_multipart and matches(media_range.inner, "application/dicom")
        ) or media_range.type in ("*/*", "multipart/*", "application/dicom"):
            wanted.append(media_range.transfer_syntax)
    return wanted
