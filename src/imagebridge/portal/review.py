"""``/portal/review``: the reconciliation review queue for staff (administrators).

Each imported study whose patient match was uncertain is shown with the incoming and the
suggested local demographics side by side and the scorecard's per-field breakdown; the
reviewer accepts the suggestion, links another local patient, or creates a new patient.
Decisions go through ``services.reconcile.Reconciler.decide`` (audited), as the JSON API's do.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from imagebridge.dicomweb.errors import status_of
from imagebridge.errors import ImageBridgeError
from imagebridge.portal import layout
from imagebridge.portal.layout import esc
from imagebridge.portal.session import Session, SignedIn, check_csrf
from imagebridge.reconcile.score import Scorecard
from imagebridge.services.reconcile import Decision, reconciler_for
from imagebridge.web.api_reconciliation import case_json, staff_name

router = APIRouter(include_in_schema=False)
PATH = "/portal/review"
_DECISIONS: dict[str, Decision] = {"accept": "accept", "link": "link", "new-patient": "new-patient"}
_FIELDS = (("name", "Name"), ("birth_date", "Birth date"), ("sex", "Sex"), ("patient_id", "Patient ID"))


def _chrome(session: Session) -> dict[str, Any]:
    return {
        "nav": layout.nav_for(session.role, current=PATH),
        "current": PATH,
        "who": session.display_name,
        "csrf": session.csrf,
    }


def _forbidden() -> Response:
    return layout.problem(
        "Staff only",
        "Only an administrator can decide which patient an imported study belongs to.",
        status=403,
    )


@router.get(PATH)
async def queue(request: Request, session: SignedIn, done: str = "") -> Response:
    who = staff_name(request, session.principal)
    if who is None:
        return _forbidden()
    reconciler = reconciler_for(request.app.state.archive)
    cases = await run_in_threadpool(lambda: [case_json(reconciler, c) for c in reconciler.records.cases()])
    parts = ["<h1>Review queue</h1>"]
    if done:
        parts.append(layout.alert(done, "ok"))
    if not cases:
        parts.append(
            layout.next_step("Nothing is waiting. Imports with an uncertain patient match appear here.")
        )
    else:
        parts.append(
            layout.next_step(
                "Compare the two columns, then accept the suggested patient, link another one, or create a new patient."
            )
        )
        card = request.app.state.archive.settings.reconciliation.scorecard()
        parts.extend(_card(case, session.csrf, card) for case in cases)
    return layout.response("Review queue", "".join(parts), **_chrome(session))


def _card(case: dict[str, Any], csrf: str, card: Scorecard) -> str:
    source = case["source_patient"]
    incoming = {**case["incoming"], "patient_id": f"{source['patient_id']} ({source['issuer']})"}
    local = case["suggested_patient"] or {}
    if local:
        local = {**local, "patient_id": f"{local['patient_id']} ({local['issuer'] or 'no issuer'})"}
    rows = [_row(label, incoming.get(key, ""), local.get(key, ""), key) for key, label in _FIELDS]
    side_by_side = layout.table(
        ["", f"Imported from {case['source']}", "Suggested local patient"], rows, caption="Demographics"
    )
    breakdown = layout.table(
        ["Field", "Comparison", "Points"],
        [
            [esc(b["field"].replace("_", " ")), esc(b["outcome"]), esc(f"{b['points']:+g}")]
            for b in case["breakdown"]
        ],
        caption=_score_caption(case["score"], card),
    )
    n = case["instances"]
    return (
        f'<section class="card" aria-labelledby="case-{case["id"]}">'
        f'<h2 id="case-{case["id"]}">Case {case["id"]}: {esc(_person(incoming.get("name", "")))} '
        f"from {esc(case['source'])}</h2>"
        f'<p class="muted" style="overflow-wrap:anywhere">{n} instance{"" if n == 1 else "s"} of study '
        f"{esc(case['study_uid'])}, waiting since {esc(case['created_at'][:16].replace('T', ' '))} UTC</p>"
        f"{side_by_side}{breakdown}{_decisions(case['id'], csrf)}</section>"
    )


def _row(label: str, incoming: str, local: str, key: str) -> list[str]:
    """A demographics row; values that differ are marked in words, not by colour alone."""
    shown = _date if key == "birth_date" else _person if key == "name" else str
    differs = key != "patient_id" and bool(local) and incoming.strip().upper() != local.strip().upper()
    mark = " <strong>(differs)</strong>" if differs else ""
    return [esc(label), esc(shown(incoming)) + mark, esc(shown(local))]


def _person(name: str) -> str:
    """``Family^Given^Middle`` as people write it: ``Family, Given Middle``."""
    family, _, rest = name.partition("^")
    given = " ".join(p for p in rest.split("^")[:2] if p)
    return f"{family}, {given}" if given else family


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _score_caption(score: float | None, card: Scorecard) -> str:
    if score is None:
        return "Score breakdown"
    return (
        f"Score {score:g}: above {card.match_above:g} links automatically, below {card.different_below:g} "
        "creates a new patient; in between a person decides"
    )


def _decisions(case_id: int, csrf: str) -> str:
    action = f"{PATH}/{case_id}"
    accept = layout.form(
        action,
        csrf,
        layout.button("Accept suggested patient", name="decision", value="accept"),
        label=f"Accept case {case_id}",
    )
    link = layout.form(
        action,
        csrf,
        "<fieldset><legend>Or link another local patient</legend>"
        + _link_fields(case_id)
        + layout.button("Link this patient", "secondary", name="decision", value="link")
        + "</fieldset>",
        label=f"Link case {case_id} to another patient",
    )
    new = layout.form(
        action,
        csrf,
        layout.button("Create a new patient", "secondary", name="decision", value="new-patient"),
        label=f"New patient for case {case_id}",
    )
    return accept + link + new


def _link_fields(case_id: int) -> str:
    return (
        f'<label for="pid-{case_id}">Local Patient ID</label>'
        f'<input type="text" id="pid-{case_id}" name="patient_id" required>'
        f'<label for="iss-{case_id}">Issuer of Patient ID (leave empty if none)</label>'
        f'<input type="text" id="iss-{case_id}" name="issuer">'
    )


@router.post(PATH + "/{case_id}")
async def decide(request: Request, case_id: int, session: SignedIn) -> Response:
    form = await check_csrf(request, session)
    who = staff_name(request, session.principal)
    if who is None:
        return _forbidden()
    decision = _DECISIONS.get(form.get("decision", ""))
    if decision is None:
        return layout.problem(
            "Unknown decision", "Choose accept, link or new patient.", (PATH, "Back to the queue")
        )
    patient = (
        (form.get("patient_id", "").strip(), form.get("issuer", "").strip()) if decision == "link" else None
    )
    reconciler = reconciler_for(request.app.state.archive)
    try:
        case = await run_in_threadpool(reconciler.decide, case_id, decision, who, patient)
    except ImageBridgeError as exc:
        return layout.problem(
            "Nothing was changed", exc.reason, (PATH, "Back to the queue"), status=status_of(exc)
        )
    done = urlencode({"done": f"Case {case_id}: {case.summary()}"})
    return RedirectResponse(f"{PATH}?{done}", status_code=303)
