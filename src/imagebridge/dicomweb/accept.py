"""Accept header negotiation for DICOMweb (PS3.18 §8.7: media types, q-values, transfer-syntax).

Clients write the same thing many ways: ``type="application/dicom"`` quoted or not,
``transfer-syntax=*``, several ranges with q-values, ``*/*``. This module reads
them all into :class:`MediaRange` values and picks the best acceptable offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
