"""Query: find studies, series or instances and answer in DICOM JSON (PS3.18 §10.6, PS3.4 §C.6).

The results carry the level's required attributes (PS3.18 Tables 10.6.3-3 to
-5), the computed ones (ModalitiesInStudy, NumberOfStudyRelated*), and any
``includefield`` attributes, taken from a stored instance when not kept per level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from imagebridge.dicom import tags
from imagebridge.dicom.matching import Level, Query
from imagebridge.errors import InvalidQuery
from imagebridge.index import search as index_search

IncludeFields = set[int] | None
"""Tags asked for with ``includefield``; None means ``all``."""


@dataclass
class QueryResult:
    matches: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def _element(vr: str, values: Iterable[Any]) -> dict[str, Any]:
    listed = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": listed} if listed else {"vr": vr}


def run(
    engine: Engine,
    query: Query,
    *,
    include: IncludeFields,
    base_url: str,
    max_limit: int,
) -> QueryResult:
    """Run ``query``; unsupported matching keys are ignored with a warning (PS3.18 §8.3.4.1)."""
    result = QueryResult(matches=[])
    kept = []
    for criterion in query.criteria:
        if index_search.supported(criterion.tag, query.level):
            kept.append(criterion)
        else:
            result.warnings.append(
                f"matching on {tags.describe(criterion.tag)} is not supported and was ignored"
            )
    query.criteria = kept
    if query.limit is None or query.limit > max_limit:
        if query.limit is not None:
            result.warnings.append(f"limit reduced to the server maximum of {max_limit}")
        query.limit = max_limit
    if query.offset < 0:
        raise InvalidQuery("offset must not be negative")
    try:
        rows = index_search.search(engine, query)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from exc
    build = {Level.STUDY: _study, Level.SERIES: _series, Level.IMAGE: _instance, Level.PATIENT: _patient}[
        query.level
    ]
    scoped = query.study_uid is not None
    for row in rows:
        answer = build(row, base_url, scoped)
        _add_included(engine, answer, row, query.level, include)
        result.matches.append(dict(sorted(answer.items())))
    return result


def _patient(row: dict[str, Any], base_url: str, scoped: bool) -> dict[str, Any]:
    return json.loads(row["patient_attrs"])


def _study(row: dict[str, Any], base_url: str, scoped: bool) -> dict[str, Any]:
    answer = _patient(row, base_url, scoped)
    answer.update(json.loads(row["study_attrs"]))
    uid = row["study_study_uid"]
    modalities = [m for m in row["study_modalities"].split("\\") if m]
    answer.update(
        {
            "0020000D": _element("UI", [uid]),
            "00080056": _element("CS", ["ONLINE"]),
            "00080061": _element("CS", modalities),
            "00201206": _element("IS", [row["study_num_series"]]),
            "00201208": _element("IS", [row["study_num_instances"]]),
            "00081190": _element("UR", [f"{base_url}/studies/{uid}"]),
        }
    )
    for key in (
        "00080020",
        "00080030",
        "00080050",
        "00080090",
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "00200010",
    ):
        answer.setdefault(key, {"vr": _VR[key]})
    return answer


_VR = {
    "00080020": "DA",
    "00080030": "TM",
    "00080050": "SH",
    "00080090": "PN",
    "00100010": "PN",
    "00100020": "LO",
    "00100030": "DA",
    "00100040": "CS",
    "00200010": "SH",
    "00080060": "CS",
    "00200011": "IS",
    "00200013": "IS",
}


def _series(row: dict[str, Any], base_url: str, scoped: bool) -> dict[str, Any]:
    answer = {} if scoped else _study(row, base_url, scoped)
    answer.update(json.loads(row["series_attrs"]))
    study_uid, series_uid = row["study_study_uid"], row["series_series_uid"]
    answer.update(
        {
            "0020000D": _element("UI", [study_uid]),
            "0020000E": _element("UI", [series_uid]),
            "00080056": _element("CS", ["ONLINE"]),
            "00201209": _element("IS", [row["series_num_instances"]]),
            "00081190": _element("UR", [f"{base_url}/studies/{study_uid}/series/{series_uid}"]),
        }
    )
    for key in ("00080060", "00200011"):
        answer.setdefault(key, {"vr": _VR[key]})
    return answer


_INSTANCE_KEYS = {tags.tag_key(t) for t in tags.INSTANCE_TAGS}


def _instance(row: dict[str, Any], base_url: str, scoped: bool) -> dict[str, Any]:
    answer = _series(row, base_url, scoped)
    if scoped:
        answer = {k: answer[k] for k in ("0020000D", "0020000E", "00080060") if k in answer}
    metadata = json.loads(row["instance_metadata"])
    row["_metadata"] = metadata
    answer.update({k: v for k, v in metadata.items() if k in _INSTANCE_KEYS})
    study_uid, series_uid, sop_uid = row["study_study_uid"], row["series_series_uid"], row["instance_sop_uid"]
    answer.update(
        {
            "00080016": _element("UI", [row["instance_sop_class_uid"]]),
            "00080018": _element("UI", [sop_uid]),
            "00080056": _element("CS", ["ONLINE"]),
            "00081190": _element(
                "UR", [f"{base_url}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"]
            ),
        }
    )
    answer.setdefault("00200013", {"vr": "IS"})
    return answer


def _add_included(
    engine: Engine, answer: dict[str, Any], row: dict[str, Any], level: Level, include: IncludeFields
) -> None:
    if include is not None and all(tags.tag_key(t) in answer for t in include):
        return
    metadata = row.get("_metadata")
    if metadata is None:
        if level is Level.PATIENT:
            return
        if level is Level.SERIES:
            metadata = index_search.representative_metadata(engine, series_pk=row["series_pk"])
        else:
            metadata = index_search.representative_metadata(engine, study_pk=row["study_pk"])
    if include is None:
        wanted = _level_keys(level)
        answer.update({k: v for k, v in metadata.items() if k in wanted and k not in answer})
        return
    for tag in include:
        key = tags.tag_key(tag)
        if key not in answer and key in metadata:
            answer[key] = metadata[key]


def _level_keys(level: Level) -> set[str]:
    """With ``includefield=all``: every attribute of the level's modules we know of, and at
    the instance level every attribute the instance has except bulk data."""
    if level is Level.STUDY:
        return {tags.tag_key(t) for t in (*tags.PATIENT_TAGS, *tags.STUDY_TAGS)}
    if level is Level.SERIES:
        return {tags.tag_key(t) for t in tags.SERIES_TAGS}
    return _AllButBulk()


class _AllButBulk(set[str]):
    def __contains__(self, key: object) -> bool:
        return key != "7FE00010"
