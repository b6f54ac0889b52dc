"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6)."""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response

from imagebridge.dicom import dicomjson, tags
from imagebridge.dicom.matching import Criterion, Level, Query
from imagebridge.dicomweb import accept
from imagebridge.dicomweb.deps import ArchiveDep, BaseUrl
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


def parse_query(
    request: Request, level: Level, study_uid: str | None, series_uid: str | None
) -> tuple[Query, set[int] | None]:
    """Read QIDO-RS query parameters (PS3.18 §8.3.4) into a Query."""
    params = request.query_params
    query = Query(level=level, study_uid=study_uid, series_uid=series_uid)
    seen: set[int] = set()
    for name, value in params.multi_items():
        key = name.lower()
        if key in _CONTROL:
            continue
        try:
            tag = tags.parse_tag(name.split(".")[0])
        except ValueError as exc:
            raise InvalidQuery(f"unknown query parameter '{name}': {exc}") from exc
        if tag in seen:
            raise InvalidQuery(f"{name} is given more than once; use a comma-separated list of UIDs instead")
        seen.add(tag)
        if value != "":
            query.criteria.append(Criterion(tag, value))
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise InvalidQuery("fuzzymatching must be true or false")
    query.fuzzy = fuzzy == "true"
    if "limit" in params:
        query.limit = _int_param("limit", params["limit"])
    if "offset" in params:
        query.offset = _int_param("offset", params["offset"])
    return query, _includefields(params.getlist("includefield"))


async def _search(
    request: Request,
    archive: ArchiveDep,
    base_url: str,
    level: Level,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    accept.choose(accept.parse(request.headers.get("accept")), _JSON_TYPES, single_ok=_JSON_TYPES)
    query, include = parse_query(request, level, study, series)
    settings = archive.settings
    if query.limit is None:
        query.limit = settings.qido_default_limit
    result = await anyio.to_thread.run_sync(
        lambda: query_service.run(
            archive.engine, query, include=include, base_url=base_url, max_limit=settings.qido_max_limit
        )
    )
    headers = (
        {"Warning": ", ".join(f'299 imagebridge "{w}"' for w in result.warnings)} if result.warnings else {}
    )
    # CP-2473: no match is 200 with an empty array.
    return Response(_render(result.matches, base_url), media_type="application/dicom+json", headers=headers)


def _render(matches: list[dict[str, Any]], base_url: str) -> str:
    text = json.dumps(matches, separators=(",", ":"), ensure_ascii=False)
    return text.replace(f'"{dicomjson.BASE}/', f'"{base_url}/')


@router.get("/studies", summary="Search for studies")
async def search_studies(request: Request, archive: ArchiveDep, base_url: BaseUrl) -> Response:
    return await _search(request, archive, base_url, Level.STUDY)


@router.get("/series", summary="Search for series")
async def search_series(request: Request, archive: ArchiveDep, base_url: BaseUrl) -> Response:
    return await _search(request, archive, base_url, Level.SERIES)


@router.get("/instances", summary="Search for instances")
async def search_instances(request: Request, archive: ArchiveDep, base_url: BaseUrl) -> Response:
    return await _search(request, archive, base_url, Level.IMAGE)


@router.get("/studies/{study}/series", summary="Search for series of a study")
async def search_study_series(
    request: Request, archive: ArchiveDep, base_url: BaseUrl, study: str
) -> Response:
    return await _search(request, archive, base_url, Level.SERIES, study)


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
async def search_study_instances(
    request: Request, archive: ArchiveDep, base_url: BaseUrl, study: str
) -> Response:
    return await _search(request, archive, base_url, Level.IMAGE, study)


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
async def search_series_instances(
    request: Request, archive: ArchiveDep, base_url: BaseUrl, study: str, series: str
) -> Response:
    return await _search(request, archive, base_url, Level.IMAGE, study, series)
