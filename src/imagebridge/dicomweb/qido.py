"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response

from imagebridge.dicom import dicomjson, tags
from imagebridge.dicom.matching import Criterion, Level, Query
from imagebridge.dicomweb import accept, warning
from imagebridge.dicomweb.deps import Access, ArchiveDep, BaseUrl, Caller
from imagebridge.errors import InvalidQuery
from imagebridge.services import query as query_service

router = APIRouter(tags=["QIDO-RS"])

_CONTROL = {"includefield", "fuzzymatching", "limit", "offset", "orderby", "charset"}
_JSON_TYPES = ("application/dicom+json", "application/json")


def _int_param(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidQuery(f"{name} must be a whole number, not '{value}'") from exc
    if number < 0:
        raise InvalidQuery(f"{name} must not be negative")
    return number


def _includefields(values: list[str]) -> set[int] | None:
    found: set[int] = set()
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            if item.strip().lower() == "all":
                return None
            try:
                found.add(tags.parse_tag(item))
            except ValueError as exc:
                raise InvalidQuery(f"includefield: {exc}") from exc
    return found


@dataclass
class ParsedQuery:
    query: Query
    include: set[int] | None
    warnings: list[str] = field(default_factory=list)


def parse_query(request: Request, level: Level, study_uid: str | None, series_uid: str | None) -> ParsedQuery:
    """Read QIDO-RS query parameters (PS3.18 §8.3.4) into a Query.

    A parameter that names no DICOM attribute is a 400; one that names an attribute the
    index cannot match on (a sequence item key, an unindexed attribute) is ignored with a
    warning. A UID or code key given twice is read as a list (``a&key=b`` as ``a,b``).
    """
    params = request.query_params
    parsed = ParsedQuery(Query(level=level, study_uid=study_uid, series_uid=series_uid), None)
    values: dict[int, list[str]] = {}
    for name, value in params.multi_items():
        if name.lower() in _CONTROL:
            continue
        path = [_attribute(name, part) for part in name.split(".")]
        if len(path) > 1:
            parsed.warnings.append(
                f"matching on the sequence item key {name} is not supported and was ignored"
            )
            continue
        if any(ord(c) < 0x20 for c in value):
            raise InvalidQuery(f"the value of {name} contains control characters")
        values.setdefault(path[0], []).append(value)
    for tag, given in values.items():
        parsed.query.criteria.extend(_criteria(tag, given))
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise InvalidQuery("fuzzymatching must be true or false")
    parsed.query.fuzzy = fuzzy == "true"
    if "limit" in params:
        parsed.query.limit = _int_param("limit", params["limit"])
    if "offset" in params:
        parsed.query.offset = _int_param("offset", params["offset"])
    parsed.include = _includefields(params.getlist("includefield"))
    return parsed


def _attribute(name: str, part: str) -> int:
    try:
        return tags.parse_tag(part)
    except ValueError as exc:
        raise InvalidQuery(
            f"unknown query parameter '{name}': {exc}; matching keys are DICOM keywords or tags "
            f"and the other parameters are {', '.join(sorted(_CONTROL))}"
        ) from exc


def _criteria(tag: int, given: list[str]) -> list[Criterion]:
    values = [v for v in given if v != ""]
    if len(given) > 1:
        if not query_service.takes_list(tag):
            raise InvalidQuery(f"{tags.describe(tag)} is given more than once; give it once")
        return [Criterion(tag, ",".join(values))] if values else []
    return [Criterion(tag, values[0])] if values else []


async def _search(
    request: Request,
    archive: ArchiveDep,
    access: Access,
    base_url: str,
    level: Level,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    accept.choose(accept.parse(request.headers.get("accept")), _JSON_TYPES, single_ok=_JSON_TYPES)
    parsed = parse_query(request, level, study, series)
    settings = archive.settings
    if parsed.query.limit is None:
        parsed.query.limit = min(settings.qido_default_limit, settings.qido_max_limit)
    result = await anyio.to_thread.run_sync(
        lambda: query_service.run(
            archive.engine,
            parsed.query,
            include=parsed.include,
            base_url=base_url,
            max_limit=settings.qido_max_limit,
            visible=access.visible(level),
        )
    )
    warnings = parsed.warnings + result.warnings
    headers = {"Warning": warning.header(warnings)} if warnings else {}
    # CP-2473: no match is 200 with an empty array.
    return Response(_render(result.matches, base_url), media_type="application/dicom+json", headers=headers)


def _render(matches: list[dict[str, Any]], base_url: str) -> str:
    text = json.dumps(matches, separators=(",", ":"), ensure_ascii=False)
    return text.replace(f'"{dicomjson.BASE}/', f'"{base_url}/')


@router.get("/studies", summary="Search for studies")
async def search_studies(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl
) -> Response:
    return await _search(request, archive, access, base_url, Level.STUDY)


@router.get("/series", summary="Search for series")
async def search_series(request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl) -> Response:
    return await _search(request, archive, access, base_url, Level.SERIES)


@router.get("/instances", summary="Search for instances")
async def search_instances(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl
) -> Response:
    return await _search(request, archive, access, base_url, Level.IMAGE)


@router.get("/studies/{study}/series", summary="Search for series of a study")
async def search_study_series(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl, study: str
) -> Response:
    return await _search(request, archive, access, base_url, Level.SERIES, study)


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
async def search_study_instances(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl, study: str
) -> Response:
    return await _search(request, archive, access, base_url, Level.IMAGE, study)


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
async def search_series_instances(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl, study: str, series: str
) -> Response:
    return await _search(request, archive, access, base_url, Level.IMAGE, study, series)
