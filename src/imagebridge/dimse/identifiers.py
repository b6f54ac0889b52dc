"""C-FIND/C-MOVE/C-GET identifiers (PS3.4 §C.4) to and from the domain's Query and Target values.

A C-FIND identifier is read as QIDO-RS parameters are: every non-empty value is a
matching key, classified by ``dicom/matching.py``; every key, empty or not, is a
return key, filled from the matched rows' DICOM JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import Engine

from imagebridge.dicom.matching import Criterion, Level, Query
from imagebridge.errors import InvalidQuery, NotFound
from imagebridge.index import search as index_search
from imagebridge.index.lookup import Lookup, StoredInstance, Target

log = logging.getLogger(__name__)

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
PATIENT_ID = 0x00100020
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
_NOT_KEYS = {QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET}


def level_of(identifier: Dataset, *, patient_root: bool) -> Level:
    """The Query/Retrieve Level (0008,0052); PATIENT only in the Patient Root model (PS3.4 §C.6)."""
    text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(text)
    except ValueError as exc:
        raise InvalidQuery(f"Query/Retrieve Level '{text}' is not PATIENT, STUDY, SERIES or IMAGE") from exc
    if level is Level.PATIENT and not patient_root:
        raise InvalidQuery("the Study Root model has no PATIENT level")
    return level


def _text(element: DataElement) -> str:
    value = element.value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        raise InvalidQuery(f"{element.keyword or element.tag} cannot be matched on binary values")
    return "" if value is None else str(value).strip()


def query_of(identifier: Dataset, level: Level) -> Query:
    """The Query an identifier asks; ``*`` alone is universal matching (PS3.4 §C.2.2.2.3)."""
    query = Query(level=level)
    for element in identifier:
        if element.tag in _NOT_KEYS or element.tag.element == 0 or element.VR == "SQ":
            continue
        text = _text(element)
        if text and text != "*":
            query.criteria.append(Criterion(int(element.tag), text))
    return query


def requested_tags(identifier: Dataset) -> set[int]:
    return {int(e.tag) for e in identifier if e.tag not in _NOT_KEYS and e.tag.element != 0}


def answer(identifier: Dataset, match: dict[str, Any], level: Level, ae_title: str) -> Dataset:
    """The response identifier: exactly the requested keys, valued from ``match`` where it has them."""
    found = Dataset()
    found.SpecificCharacterSet = "ISO_IR 192"
    found.QueryRetrieveLevel = level.value
    found.RetrieveAETitle = ae_title
    for element in identifier:
        tag = int(element.tag)
        if tag in _NOT_KEYS or element.tag.element == 0 or tag == RETRIEVE_AE_TITLE:
            continue
        found.add(_value(element, match.get(f"{tag:08X}")))
    return found


def _value(requested: DataElement, value: dict[str, Any] | None) -> DataElement:
    empty = DataElement(requested.tag, requested.VR, [] if requested.VR == "SQ" else None)
    if not value or "BulkDataURI" in value or ("Value" not in value and "InlineBinary" not in value):
        return empty
    try:
        return Dataset.from_json({f"{int(requested.tag):08X}": value})[requested.tag]
    except Exception as exc:  # tolerant on read: an odd stored value answers empty
        log.info("C-FIND answer leaves %s empty: %s", requested.tag, exc)
        return empty


def _uids(identifier: Dataset, tag: int) -> list[str]:
    if tag not in identifier:
        return []
    return [u for u in _text(identifier[tag]).split("\\") if u]


def instances_of(engine: Engine, lookup: Lookup, identifier: Dataset, level: Level) -> list[StoredInstance]:
    """Every stored instance a C-MOVE/C-GET identifier names (PS3.4 §C.4.2.1.4), in series order."""
    found: list[StoredInstance] = []
    seen: set[str] = set()
    for target in _targets(engine, identifier, level):
        for instance in _lookup(lookup, target):
            if instance.sop_uid not in seen:
                seen.add(instance.sop_uid)
                found.append(instance)
    return found


def _lookup(lookup: Lookup, target: Target) -> list[StoredInstance]:
    try:
        return lookup.instances(target)
    except NotFound:
        return []


def _targets(engine: Engine, identifier: Dataset, level: Level) -> Iterable[Target]:
    unique = {
        Level.PATIENT: PATIENT_ID,
        Level.STUDY: STUDY_UID,
        Level.SERIES: SERIES_UID,
        Level.IMAGE: SOP_UID,
    }
    keys = _uids(identifier, unique[level])
    if not keys:
        raise InvalidQuery(f"a {level.value}-level retrieve needs the unique key {unique[level]:08X}")
    if level is Level.STUDY:
        return [Target(uid) for uid in keys]
    query = Query(level=Level.STUDY if level is Level.PATIENT else level)
    query.criteria.append(Criterion(unique[level], "\\".join(keys)))
    studies = _uids(identifier, STUDY_UID)
    if studies and level is not Level.PATIENT:
        query.criteria.append(Criterion(STUDY_UID, "\\".join(studies)))
    rows = index_search.search(engine, query)
    return [
        Target(row["study_study_uid"], row.get("series_series_uid"), row.get("instance_sop_uid"))
        for row in rows
    ]


def stored_syntaxes(engine: Engine, sop_uids: list[str]) -> dict[str, str]:
    """SOP Instance UID -> stored transfer syntax, for the given instances."""
    if not sop_uids:
        return {}
    query = Query(level=Level.IMAGE, criteria=[Criterion(SOP_UID, "\\".join(sop_uids))])
    return {r["instance_sop_uid"]: r["instance_transfer_syntax"] for r in index_search.search(engine, query)}
