"""Paging of search results (R4 §3.1.1.5.7 ``_count``; §3.1.1.6 the Bundle's ``self``/``next``/``previous`` links).

The cursor is an offset into the matches (``_offset``), carried in the links the server writes;
clients follow the links rather than build them. ``total`` always counts every match, not the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from imagebridge.errors import InvalidQuery
from imagebridge.fhir import resources

DEFAULT_COUNT = 50
MAX_COUNT = 500
CONTROLS = ("_count", "_offset")


@dataclass(frozen=True)
class Page:
    count: int = DEFAULT_COUNT
    offset: int = 0
    asked: tuple[tuple[str, str], ...] = ()
    """The paging controls as the client sent them (repeated in the ``self`` link)."""


def take(pairs: list[tuple[str, str]]) -> tuple[Page, list[tuple[str, str]]]:
    """The page asked for, and the search parameters without the paging controls.

    A ``_count`` above :data:`MAX_COUNT` is served as MAX_COUNT (a server may return fewer, R4 §3.1.1.5.7);
    ``_count=0`` asks for the total only."""
    asked = tuple((key, value) for key, value in pairs if key in CONTROLS)
    rest = [(key, value) for key, value in pairs if key not in CONTROLS]
    values = dict(asked)
    count = _whole(values.get("_count"), "_count", DEFAULT_COUNT)
    offset = _whole(values.get("_offset"), "_offset", 0)
    return Page(min(count, MAX_COUNT), offset, asked), rest


def _whole(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not text.strip().isdigit():
        raise InvalidQuery(f"{name} must be a whole number of 0 or more, not '{text}'")
    return int(text)


def searchset(
    url: str,
    fhir_base: str,
    pairs: list[tuple[str, str]],
    page: Page,
    matches: list[dict[str, Any]],
    includes: list[dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``matches`` as a searchset Bundle; ``includes`` only when the page has matches."""
    shown = matches[page.offset : page.offset + page.count]
    bundle = resources.searchset(url, fhir_base, shown, includes if shown else [])
    bundle["total"] = len(matches)
    bundle["link"] = links(url, pairs, page, len(matches))
    return bundle


def links(url: str, pairs: list[tuple[str, str]], page: Page, total: int) -> list[dict[str, str]]:
    """``self`` is the search as asked (as a GET, R4 §3.1.1.6); ``next``/``previous`` carry the cursor."""

    def query(extra: list[tuple[str, str]]) -> str:
        text = urlencode([*pairs, *extra])
        return f"{url}?{text}" if text else url

    def at(offset: int) -> str:
        return query([("_count", str(page.count)), ("_offset", str(offset))])

    found = [{"relation": "self", "url": query(list(page.asked))}]
    if page.count and page.offset + page.count < total:
        found.append({"relation": "next", "url": at(page.offset + page.count)})
    if page.count and page.offset > 0:
        found.append({"relation": "previous", "url": at(max(page.offset - page.count, 0))})
    return found
