"""The access log in plain language (audit.plain)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from imagebridge.audit.plain import Labels, StudyLabel, describe, describe_all
from imagebridge.audit.store import AuditRecord
from tests.sharing.conftest import Served
from tests.sharing.helpers import BIRTH_A, patient_token

WHEN = datetime(2024, 11, 12, 14, 2, tzinfo=UTC)
LABELS = Labels(
    people={"drx": "Dr X", "ann": "Ann Alpha"},
    patients_of={"ann": ("pa",)},
    apps={"viewer": "Imaging Viewer"},
    recipients={"s1": "Dr Who"},
    studies={"1.2.3": StudyLabel("CT", "20240303"), "1.2.4": StudyLabel("MR", "20230101")},
)


def event(**fields: object) -> AuditRecord:
    base: dict[str, object] = {
        "event_id": "e",
        "recorded": WHEN,
        "action": "access",
        "outcome": "allow",
        "reason": "ok",
        "patient": "pa",
    }
    return AuditRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_who_via_what_when_where() -> None:
    viewed = event(user="drx", client_id="viewer", interaction="read", study_uid="1.2.3", remote="10.0.0.5")
    assert describe(viewed, LABELS) == (
        "Dr X (via Imaging Viewer) viewed your CT of 3 March 2024 on 12 Nov 2024 at 14:02 UTC from 10.0.0.5"
    )
    own = event(user="ann", client_id="viewer", action="download", study_uid="1.2.4")
    assert describe(own, LABELS).startswith(
        "You (via Imaging Viewer) downloaded your MR of 1 January 2023 on"
    )
    shared = event(
        action="share-redeem",
        share_id="s1",
        client_id="imagebridge-share",
        detail={"studies": ["1.2.3", "1.2.4"]},
    )
    assert describe(shared, LABELS).startswith(
        "Dr Who (through a share) opened the share of your CT of 3 March 2024 and MR of 1 January 2023 on"
    )


def test_refusals_and_repeats() -> None:
    failed = event(
        action="share-redeem-failed",
        outcome="failure",
        reason="wrong access code or date of birth",
        share_id="s9",
    )
    assert describe(failed, LABELS) == (
        "Someone you shared with tried to open the share of your records on 12 Nov 2024 at 14:02 UTC; "
        "this was refused (wrong access code or date of birth)"
    )
    denied = event(
        client_id="backend", outcome="deny", interaction="read", resource="Patient", reason="no", count=3
    )
    assert describe(denied, LABELS) == (
        "The app backend tried to view your patient record on 12 Nov 2024 at 14:02 UTC (3 times); this was refused (no)"
    )
    assert describe(event(), Labels()) == "Someone accessed your records on 12 Nov 2024 at 14:02 UTC"


def test_describe_all_looks_names_up(served: Served) -> None:
    p = served.people
    ann = {"Authorization": f"Bearer {patient_token(served.authz, p.a)}"}
    assert httpx.get(f"{served.url}/fhir/ImagingStudy/{p.sa1}", headers=ann).status_code == 200
    created = served.sharing.create(patient=p.a, studies=[p.sa1], created_by="ann", recipient="Dr Who")
    served.sharing.redeem(created.share.share_id, created.code, BIRTH_A, "10.9.8.7")
    store = served.sharing.audit
    store.flush()
    lines = describe_all(served.archive.engine, store.search(patient=p.a))
    assert lines[0].startswith("Dr Who (through a share) opened the share of your CT of 3 March 2024 on ")
    assert lines[0].endswith(" from 10.9.8.7")
    assert lines[1].startswith("You shared your CT of 3 March 2024 on ")
    assert any(
        line.startswith("You (via Patient portal) viewed your CT of 3 March 2024 on ") for line in lines
    )
