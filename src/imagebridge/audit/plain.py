"""The access log in plain language, for the patient reading "who looked at my images".

``describe(event)`` makes one sentence from an :class:`~imagebridge.audit.store.AuditRecord`::

    Dr X (via Imaging Viewer) viewed your CT of 3 March 2024 on 12 Nov 2024 at 14:02 UTC from 10.0.0.5

Names of people, apps, share recipients and studies come from :class:`Labels`; without them the
sentence uses what the record holds (user names, client ids, "a study").
:func:`describe_all` looks the labels up for a list of events in a few queries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select

from imagebridge.audit.log import CLI_CLIENT
from imagebridge.audit.store import AuditRecord
from imagebridge.index.schema import auth_clients, auth_users, shares, studies

_VERBS = {
    "view": "viewed",
    "search": "looked up",
    "download": "downloaded",
    "send": "sent a copy of",
    "import": "imported",
    "delete": "deleted",
    "reconcile": "filed outside images with",
    "share-create": "shared",
    "share-revoke": "stopped sharing",
    "share-redeem": "opened the share of",
    "share-redeem-failed": "tried to open the share of",
    "share-unlock": "unlocked the share of",
    "share-reissue": "issued a new access code for the share of",
}
_INTERACTIONS = {"read": "viewed", "search": "looked up", "create": "stored images in", "delete": "deleted"}
_INFINITIVES = {
    "viewed": "view",
    "looked up": "look up",
    "downloaded": "download",
    "sent a copy of": "send a copy of",
    "imported": "import",
    "deleted": "delete",
    "filed outside images with": "file outside images with",
    "shared": "share",
    "stopped sharing": "stop sharing",
    "opened the share of": "open the share of",
    "unlocked the share of": "unlock the share of",
    "issued a new access code for the share of": "issue a new access code for the share of",
    "stored images in": "store images in",
    "accessed": "access",
}
_SHARE_CLIENT = "imagebridge-share"
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


@dataclass(frozen=True)
class StudyLabel:
    modality: str
    date: str
    """DICOM DA (YYYYMMDD) or empty."""
    description: str = ""


@dataclass
class Labels:
    """Readable names for what an event refers to by id."""

    people: dict[str, str] = field(default_factory=dict)
    """username → display name"""
    patients_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """username → the patients a patient user is (so their own access reads "You")"""
    apps: dict[str, str] = field(default_factory=dict)
    recipients: dict[str, str] = field(default_factory=dict)
    """share id → the recipient the patient named"""
    studies: dict[str, StudyLabel] = field(default_factory=dict)


def describe(event: AuditRecord, labels: Labels | None = None) -> str:
    """One plain sentence: who (via which app) did what to which study, when, from where, and if refused."""
    labels = labels or Labels()
    refused = event.outcome in ("deny", "failure", "error")
    verb = _verb(event)
    if refused and not verb.startswith("tried"):
        verb = f"tried to {_infinitive(verb)}"
    what = _what(event, labels) + (_import_note(event) if event.action == "import" else "")
    sentence = f"{_who(event, labels)}{_via(event, labels)} {verb} {what} on {_when(event.recorded)}"
    if event.remote:
        sentence += f" from {event.remote}"
    if event.count > 1:
        sentence += f" ({event.count} times)"
    if refused:
        sentence += f"; this was refused ({event.reason})" if event.reason else "; this was refused"
    return sentence


def describe_all(engine: Engine, events: Sequence[AuditRecord]) -> list[str]:
    """:func:`describe` for each event, with names looked up once for all of them."""
    labels = labels_for(engine, events)
    return [describe(e, labels) for e in events]


def labels_for(engine: Engine, events: Sequence[AuditRecord]) -> Labels:
    users = {e.user for e in events if e.user}
    clients = {e.client_id for e in events if e.client_id}
    share_ids = {e.share_id for e in events if e.share_id}
    study_uids = {uid for e in events for uid in e.studies}
    labels = Labels()
    with engine.connect() as conn:
        if users:
            query = select(
                auth_users.c.username, auth_users.c.display_name, auth_users.c.role, auth_users.c.patients
            )
            for row in conn.execute(query.where(auth_users.c.username.in_(users))):
                labels.people[row.username] = row.display_name or row.username
                if row.role == "patient":
                    labels.patients_of[row.username] = tuple(json.loads(row.patients or "[]"))
        if clients:
            query = select(auth_clients.c.client_id, auth_clients.c.name).where(
                auth_clients.c.client_id.in_(clients)
            )
            labels.apps.update({r.client_id: r.name or r.client_id for r in conn.execute(query)})
        if share_ids:
            query = select(shares.c.share_id, shares.c.recipient).where(shares.c.share_id.in_(share_ids))
            labels.recipients.update({r.share_id: r.recipient for r in conn.execute(query) if r.recipient})
        if study_uids:
            query = select(
                studies.c.study_uid, studies.c.modalities, studies.c.study_date, studies.c.description
            )
            for row in conn.execute(query.where(studies.c.study_uid.in_(study_uids))):
                modality = next((m for m in row.modalities.split("\\") if m), "")
                labels.studies[row.study_uid] = StudyLabel(modality, row.study_date, row.description)
    return labels


def _who(event: AuditRecord, labels: Labels) -> str:
    if event.user:
        if event.patient and event.patient in labels.patients_of.get(event.user, ()):
            return "You"
        return labels.people.get(event.user, event.user)
    if event.share_id:
        recipient = labels.recipients.get(event.share_id)
        return f"{recipient} (through a share)" if recipient else "Someone you shared with"
    if event.token_patient and event.token_patient == event.patient:
        return "You"
    if event.client_id == CLI_CLIENT:
        return "Imaging staff"
    if event.client_id:
        return f"The app {labels.apps.get(event.client_id, event.client_id)}"
    return "Someone"


def _via(event: AuditRecord, labels: Labels) -> str:
    if not event.client_id or event.client_id == _SHARE_CLIENT or not (event.user or event.token_patient):
        return ""
    return f" (via {labels.apps.get(event.client_id, event.client_id)})"


def _verb(event: AuditRecord) -> str:
    if event.action in _VERBS:
        return _VERBS[event.action]
    return _INTERACTIONS.get(event.interaction or "", "accessed")


def _infinitive(verb: str) -> str:
    return _INFINITIVES.get(verb, "access")


def _what(event: AuditRecord, labels: Labels) -> str:
    uids = event.studies
    if uids:
        named = [_study(labels.studies.get(uid)) for uid in uids[:3]]
        more = len(uids) - len(named)
        text = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
        return f"your {text}" + (f" and {more} more" if more > 0 else "")
    if event.resource == "Patient":
        return "your patient record"
    if event.resource == "AuditEvent":
        return "your access log"
    if event.resource == "ImagingStudy" or event.interaction == "search":
        return "your list of studies"
    return "your records"


_IMPORT_ORIGINS = {
    "upload": " from an upload",
    "cli": " from a disc or file",
    "review": " after staff checked whose images they are",
}


def _import_note(event: AuditRecord) -> str:
    """How images came in: from where, from which outside source, how many were new."""
    detail = event.detail
    note = _IMPORT_ORIGINS.get(str(detail.get("origin", "")), "")
    extras = []
    if detail.get("source"):
        extras.append(f"outside images from {detail['source']}")
    stored, already, waiting = (
        _number(detail.get(k)) for k in ("stored", "already_present", "waiting_review")
    )
    if stored:
        extras.append(f"{stored} new {'image' if stored == 1 else 'images'}")
    if already:
        extras.append(f"{already} already here")
    if waiting:
        extras.append(f"{waiting} waiting for staff to check")
    return note + (f" ({', '.join(extras)})" if extras else "")


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _study(label: StudyLabel | None) -> str:
    if label is None:
        return "study"
    kind = label.modality or "study"
    return f"{kind} of {_day(label.date)}" if _day(label.date) else kind


def _day(dicom_date: str) -> str:
    text = dicom_date.strip()
    if len(text) != 8 or not text.isdigit() or not 1 <= int(text[4:6]) <= 12:
        return ""
    return f"{int(text[6:])} {_MONTHS[int(text[4:6]) - 1]} {text[:4]}"


def _when(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y} at {moment:%H:%M} UTC"
