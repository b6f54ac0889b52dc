"""FHIR R4 ``AuditEvent`` at /fhir/AuditEvent, built from the durable access log (``audit/store.py``).

Coding follows DICOM PS3.15 Annex A.5 and the FHIR R4 AuditEvent value sets: ``type`` is a DICOM
audit event ID (110103 DICOM Instances Accessed, 110112 Query, 110106 Export, 110107 Import,
110105 DICOM Study Deleted, 110110 Patient Record, 110114 User Authentication) or, for the FHIR
REST API, ``rest`` with the RESTful interaction as ``subtype``; every event also carries our own
action name as a ``subtype`` (``urn:imagebridge:audit-action``). ``action`` is C/R/U/D/E,
``outcome`` 0 (success), 4 (refused or failed), 8 (error). The patient is an ``entity`` with role
Patient; each study is an entity (type System Object, role Report) naming ImagingStudy/{uid} and
the Study Instance UID as ``urn:oid:``.

Access goes through ``auth.policy`` like ImagingStudy: a patient token reads its own patient's
events; user/ scopes reach the patients the user may; a search without a patient is for
administrators only (or a system/ client whose policy covers every patient).

Search: ``patient``, ``date`` (prefixes, repeat for a range), ``entity`` (ImagingStudy/{uid},
a Study Instance UID, urn:oid:{uid} or Patient/{id}), ``_count``/``_offset``; newest first.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement

from imagebridge.audit.store import AuditRecord, AuditStore
from imagebridge.auth.clients import ALL
from imagebridge.auth.errors import AccessDenied
from imagebridge.auth.policy import Principal, Target
from imagebridge.auth.users import Role
from imagebridge.errors import InvalidQuery, NotFound
from imagebridge.fhir import paging, resources, search
from imagebridge.fhir.app import Caller, SearchPairs, Where, fhir, params, require
from imagebridge.index.schema import audit_events

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ACTION_SYSTEM = "urn:imagebridge:audit-action"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
PARAMS = {"patient", "date", "entity"}

_DCM_NAMES = {
    "110100": "Application Activity",
    "110103": "DICOM Instances Accessed",
    "110104": "DICOM Instances Transferred",
    "110105": "DICOM Study Deleted",
    "110106": "Export",
    "110107": "Import",
    "110110": "Patient Record",
    "110112": "Query",
    "110114": "User Authentication",
    "110122": "Login",
    "110150": "Application",
}
_BY_ACTION = {
    "view": ("110103", "R"),
    "search": ("110112", "E"),
    "download": ("110106", "R"),
    "send": ("110106", "R"),
    "import": ("110107", "C"),
    "delete": ("110105", "D"),
    "reconcile": ("110110", "U"),
    "share-create": ("110110", "C"),
    "share-revoke": ("110110", "D"),
    "share-unlock": ("110110", "U"),
    "share-reissue": ("110110", "U"),
    "share-redeem": ("110114", "E"),
    "share-redeem-failed": ("110114", "E"),
}
_BY_INTERACTION = {
    "read": ("110103", "R"),
    "search": ("110112", "E"),
    "create": ("110104", "C"),
    "delete": ("110105", "D"),
}
_REST = {
    "read": ("read", "R"),
    "search": ("search-type", "E"),
    "create": ("create", "C"),
    "delete": ("delete", "D"),
}


def install(app: FastAPI) -> None:
    """Add the AuditEvent routes to the FHIR sub-application."""
    app.state.audit = AuditStore.of(app.state.archive.engine)

    @app.get("/AuditEvent")
    @app.post("/AuditEvent/_search")
    def search_audit_events(
        request: Request, pairs: SearchPairs, caller: Caller, where: Where
    ) -> JSONResponse:
        page, pairs = paging.take(pairs)
        query = params(pairs, PARAMS)
        patient, studies = _entities(query)
        patient = _scope(request, caller, patient)
        conditions = _dates(query.get("date", []))
        store: AuditStore = request.app.state.audit
        store.flush()
        filters: dict[str, Any] = {"patient": patient, "studies": studies}
        total = store.count(conditions, **filters)
        found = (
            store.search(conditions, limit=page.count, offset=page.offset, **filters) if page.count else []
        )
        url = f"{where.fhir}/AuditEvent"
        bundle = resources.searchset(url, where.fhir, [audit_event(r, where.base) for r in found], [])
        bundle["total"] = total
        bundle["link"] = paging.links(url, pairs, page, total)
        return fhir(bundle)

    @app.get("/AuditEvent/{event_id}")
    def read_audit_event(request: Request, event_id: str, caller: Caller, where: Where) -> JSONResponse:
        store: AuditStore = request.app.state.audit
        store.flush()
        event = store.get(event_id) if len(event_id) <= 64 else None
        if event is None or event.patient is None:
            require(caller, Target("AuditEvent", "read"))
            if event is None:
                raise NotFound(f"AuditEvent/{event_id} is not known")
            if not _reads_everything(request, caller):
                raise AccessDenied("only administrators read events that concern no patient")
        else:
            require(caller, Target("AuditEvent", "read", patient=event.patient))
        return fhir(audit_event(event, where.base))


def _scope(request: Request, caller: Principal, patient: str | None) -> str | None:
    """The patient the search is limited to (None: all), after the policy said yes."""
    if patient is None and not _reads_everything(request, caller):
        if caller.patient is None:
            raise InvalidQuery(
                "AuditEvent search needs a patient parameter (all events are for administrators)"
            )
        patient = caller.patient
    require(caller, Target("AuditEvent", "search", patient=patient))
    return patient


def _reads_everything(request: Request, caller: Principal) -> bool:
    if caller.share is not None:
        return False
    if any(s.level == "system" for s in caller.scopes.clinical) and caller.client_policy.patients == ALL:
        return True
    users = request.app.state.authorization.users
    user = users.get(caller.subject) if caller.subject else None
    return user is not None and user.role is Role.ADMIN and caller.scopes.grants("user", "AuditEvent", "s")


def _entities(query: dict[str, list[str]]) -> tuple[str | None, list[str]]:
    patients = {search.patient_reference(v) for v in search.split_values(query.get("patient", []))}
    studies: list[str] = []
    for value in search.split_values(query.get("entity", [])):
        text = value.strip()
        if text.startswith("Patient/") or "/Patient/" in text:
            patients.add(search.patient_reference(text))
            continue
        uid = text.rpartition("ImagingStudy/")[2] if "ImagingStudy/" in text else text
        uid = uid.removeprefix("urn:oid:")
        if not uid or len(uid) > 64 or not all(c.isdigit() or c == "." for c in uid):
            raise InvalidQuery(
                f"entity '{value}' is not ImagingStudy/<uid>, a Study Instance UID or Patient/<id>"
            )
        studies.append(uid)
    if len(patients) > 1:
        raise InvalidQuery("search the events of one patient at a time")
    return (patients.pop() if patients else None), studies


def _dates(values: list[str]) -> list[ColumnElement[bool]]:
    return [search.compare(audit_events.c.recorded, search.date_range(v)) for v in values]


def audit_event(event: AuditRecord, base: str) -> dict[str, Any]:
    """One access-log row as an R4 AuditEvent."""
    kind, subtype, action = _coding(event)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event.event_id,
        "type": kind,
        "subtype": [*subtype, {"system": ACTION_SYSTEM, "code": event.action}],
        "action": action,
        "recorded": _instant(event),
        "outcome": _outcome(event.outcome),
        "outcomeDesc": _description(event),
        "agent": _agents(event),
        "source": {
            "site": base,
            "observer": {"display": "imagebridge"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    entities = _entity_list(event)
    if entities:
        resource["entity"] = entities
    return resource


def _coding(event: AuditRecord) -> tuple[dict[str, str], list[dict[str, str]], str]:
    if event.action in _BY_ACTION:
        code, action = _BY_ACTION[event.action]
        subtype = [_dcm("110122")] if code == "110114" else []
        return _dcm(code), subtype, action
    interaction = event.interaction or "read"
    if event.detail.get("surface") == "fhir" and interaction in _REST:
        name, action = _REST[interaction]
        rest = {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
        return rest, [{"system": RESTFUL, "code": name, "display": name}], action
    code, action = _BY_INTERACTION.get(interaction, ("110100", "E"))
    return _dcm(code), [], action


def _dcm(code: str) -> dict[str, str]:
    return {"system": DCM, "code": code, "display": _DCM_NAMES[code]}


def _outcome(outcome: str) -> str:
    if outcome in ("allow", "success"):
        return "0"
    if outcome in ("deny", "failure"):
        return "4"
    return "8"


def _instant(event: AuditRecord) -> str:
    return event.recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _description(event: AuditRecord) -> str:
    text = event.reason or event.outcome
    return text if event.count == 1 else f"{text} ({event.count} identical requests within a few seconds)"


def _agents(event: AuditRecord) -> list[dict[str, Any]]:
    network = {"address": event.remote, "type": "2"} if event.remote else None
    person: dict[str, Any] | None = None
    if event.user:
        person = _agent(
            _identifier("urn:imagebridge:user", event.user, event.user), "humanuser", "human user"
        )
    elif event.share_id:
        who = _identifier("urn:imagebridge:share", event.share_id, "recipient of a share")
        person = _agent(who, "humanuser", "human user")
    elif event.token_patient:
        person = _agent({"reference": f"Patient/{event.token_patient}"}, "humanuser", "human user")
    app: dict[str, Any] | None = None
    if event.client_id:
        app = {
            "type": {"coding": [_dcm("110150")]},
            "who": _identifier("urn:imagebridge:client", event.client_id, event.client_id),
            "requestor": person is None,
        }
    agents = [a for a in (person, app) if a is not None] or [
        {"who": {"display": "imagebridge (no caller known)"}, "requestor": True}
    ]
    if network:
        agents[0]["network"] = network
    if event.user_agent:
        agents[0]["name"] = event.user_agent[:200]
    return agents


def _agent(who: dict[str, Any], code: str, display: str) -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": ROLE_TYPE, "code": code, "display": display}]},
        "who": who,
        "requestor": True,
    }


def _identifier(system: str, value: str, display: str) -> dict[str, Any]:
    return {"identifier": {"system": system, "value": value}, "display": display}


def _entity_list(event: AuditRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if event.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{event.patient}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    for uid in event.studies:
        entity: dict[str, Any] = {
            "what": {
                "reference": f"ImagingStudy/{uid}",
                "identifier": {"system": search.DICOM_UID, "value": f"urn:oid:{uid}"},
            },
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"},
        }
        details = [("SeriesInstanceUID", event.series_uid), ("SOPInstanceUID", event.instance_uid)]
        found = [
            {"type": name, "valueString": value}
            for name, value in details
            if value and uid == event.study_uid
        ]
        if found:
            entity["detail"] = found
        entities.append(entity)
    if event.share_id:
        entities.append(
            {
                "what": {"identifier": {"system": "urn:imagebridge:share", "value": event.share_id}},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "description": "a patient's share (link and access code)",
            }
        )
    return entities
