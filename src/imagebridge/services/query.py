"""Query: find studies, series or instances and answer in DICOM JSON (PS3.18 §10.6, PS3.4 §C.6).

The results carry the level's required attributes (PS3.18 Tables 10.6.3-3 to
-5), present even when empty, the computed ones (ModalitiesInStudy,
NumberOfStudyRelated*, NumberOfSeriesRelatedInstances, RetrieveURL), and any
``includefield`` attributes, taken from a stored instance when not kept per level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from sqlalchemy import ColumnElement, Engine

from imagebridge.dicom import tags
from imagebridge.dicom.matching import Kind, Level, Query
from imagebridge.errors import InvalidQuery
from imagebridge.index import search as index_search

IncludeFields = set[int] | None
"""Tags asked for with ``includefield``; None means ``all``."""


@dataclass
class QueryResult:
    matches: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Shape:
    """Which levels' attributes an answer carries: those of the level asked for, and of the
    levels above it that the request did not fix in its path (PS3.18 §10.6.3.3)."""

    level: Level
    with_study: bool
    with_series: bool


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
    visible: ColumnElement[bool] | None = None,
) -> QueryResult:
    """Run ``query``; unsupported matching keys are ignored with a warning (PS3.18 §8.3.4.1).

    ``visible`` is the caller's access as SQL (``index.access.visible``); None: everything."""
    result = QueryResult(matches=[])
    kept = []
    for criterion in query.criteria:
        if index_search.supported(criterion.tag, query.level):
            kept.append(criterion)
        else:
            result.warnings.append(
                f"matching on {tags.describe(criterion.tag)} is not supported at this level and was ignored"
            )
    query.criteria = kept
    if query.offset < 0:
        raise InvalidQuery("offset must not be negative")
    if query.limit is None or query.limit > max_limit:
        if query.limit is not None:
            result.warnings.append(f"limit reduced to the server maximum of {max_limit}")
        query.limit = max_limit
    try:
        rows = index_search.search(engine, query, visible)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from exc
    shape = _Shape(query.level, query.study_uid is None, query.series_uid is None)
    answers = [_answer(row, base_url, shape) for row in rows]
    _add_included(engine, answers, rows, shape, include)
    result.matches = [dict(sorted(answer.items())) for answer in answers]
    return result


def takes_list(tag: int) -> bool:
    """Whether ``tag`` is matched by UID or code lists (PS3.4 §C.2.2.2.2), so may be repeated."""
    field = index_search.FIELDS.get(tag)
    return field is not None and field.kind in (Kind.UID, Kind.CODE)


def _answer(row: dict[str, Any], base_url: str, shape: _Shape) -> dict[str, Any]:
    if shape.level is Level.PATIENT:
        return dict(json.loads(row["patient_attrs"]))
    answer: dict[str, Any] = {}
    if shape.level is Level.STUDY or shape.with_study:
        answer.update(_study(row, base_url))
    if shape.level is Level.SERIES or (shape.level is Level.IMAGE and shape.with_series):
        answer.update(_series(row, base_url))
    if shape.level is Level.IMAGE:
        answer.update(_instance(row, base_url))
    answer["0020000D"] = _element("UI", [row["study_study_uid"]])
    if shape.level is not Level.STUDY:
        answer["0020000E"] = _element("UI", [row["series_series_uid"]])
    return answer


def _defaults(answer: dict[str, Any], keys: Iterable[str]) -> None:
    """Required return attributes are present even when the instance has no value (PS3.18 §10.6.3.3)."""
    for key in keys:
        answer.setdefault(key, {"vr": dictionary_VR(int(key, 16))})


_STUDY_REQUIRED = (
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080090",  # ReferringPhysicianName
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100030",  # PatientBirthDate
    "00100040",  # PatientSex
    "00200010",  # StudyID
)
_SERIES_REQUIRED = (
    "00080060",  # Modality
    "0008103E",  # SeriesDescription
    "00200011",  # SeriesNumber
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
)
_INSTANCE_REQUIRED = (
    "00200013",  # InstanceNumber
    "00280010",  # Rows
    "00280011",  # Columns
    "00280100",  # BitsAllocated
    "00280008",  # NumberOfFrames
)


def _study(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Table 10.6.3-3: the study's own and its patient's attributes, and the computed ones."""
    answer: dict[str, Any] = json.loads(row["patient_attrs"])
    answer.update(json.loads(row["study_attrs"]))
    uid = row["study_study_uid"]
    modalities = [m for m in row["study_modalities"].split("\\") if m]
    answer.update(
        {
            "00080056": _element("CS", ["ONLINE"]),
            "00080061": _element("CS", modalities),
            "00201206": _element("IS", [row["study_num_series"]]),
            "00201208": _element("IS", [row["study_num_instances"]]),
            "00081190": _element("UR", [f"{base_url}/studies/{uid}"]),
        }
    )
    _defaults(answer, _STUDY_REQUIRED)
    return answer


def _series(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Table 10.6.3-4."""
    answer: dict[str, Any] = json.loads(row["series_attrs"])
    study_uid, series_uid = row["study_study_uid"], row["series_series_uid"]
    answer.update(
        {
            "00080056": _element("CS", ["ONLINE"]),
            "00201209": _element("IS", [row["series_num_instances"]]),
            "00081190": _element("UR", [f"{base_url}/studies/{study_uid}/series/{series_uid}"]),
        }
    )
    _defaults(answer, _SERIES_REQUIRED)
    return answer


_INSTANCE_KEYS = {tags.tag_key(t) for t in tags.INSTANCE_TAGS}


def _instance(row: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Table 10.6.3-5."""
    metadata = json.loads(row["instance_metadata"])
    row["_metadata"] = metadata
    answer = {k: v for k, v in metadata.items() if k in _INSTANCE_KEYS}
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
    _defaults(answer, _INSTANCE_REQUIRED)
    return answer


def _add_included(
    engine: Engine,
    answers: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    shape: _Shape,
    include: IncludeFields,
) -> None:
    """Add ``includefield`` attributes (PS3.18 §8.3.4.3); asked-for attributes without a value
    are returned empty. Instance metadata for a whole page is fetched in one query."""
    if shape.level is Level.PATIENT or (include is not None and not include):
        return
    needed = [
        i
        for i, answer in enumerate(answers)
        if "_metadata" not in rows[i]
        and (include is None or any(tags.tag_key(t) not in answer for t in include))
    ]
    by_series = shape.level is Level.SERIES
    found = index_search.representative_metadata_many(
        engine,
        study_pks=[] if by_series else [rows[i]["study_pk"] for i in needed],
        series_pks=[rows[i]["series_pk"] for i in needed] if by_series else [],
    )
    for i, answer in enumerate(answers):
        metadata = rows[i].get("_metadata")
        if metadata is None:
            key = ("series", rows[i]["series_pk"]) if by_series else ("study", rows[i]["study_pk"])
            metadata = found.get(key, {})
        _include(answer, metadata, shape.level, include)


def _include(answer: dict[str, Any], metadata: dict[str, Any], level: Level, include: IncludeFields) -> None:
    if include is None:
        wanted = _level_keys(level)
        answer.update({k: v for k, v in metadata.items() if k in wanted and k not in answer})
        return
    for tag in include:
        key = tags.tag_key(tag)
        if key in answer:
            continue
        if key in metadata:
            answer[key] = metadata[key]
        elif tags.is_standard(tag):
            answer[key] = {"vr": dictionary_VR(tag)}


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
