"""HTML of the portal's own pages (sign-in, study list, one study, quick look), built on ``layout``."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlencode

from imagebridge.fhir.index import PatientRow, StudyRow
from imagebridge.portal import layout
from imagebridge.portal.layout import esc
from imagebridge.portal.studies import Person, Report


def person_name(dicom_name: str) -> str:
    """A DICOM PN (``Family^Given^Middle``) the way people write it ("Given Middle Family")."""
    parts = [p for p in dicom_name.split("=")[0].split("^") if p]
    if len(parts) >= 2:
        return " ".join([*parts[1:3], parts[0]]).strip()
    return parts[0] if parts else "(no name)"


def date(value: str) -> str:
    """A DICOM DA (YYYYMMDD) as an unambiguous date ("2004-01-19"); "date unknown" if empty."""
    if len(value) >= 8 and value[:8].isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return value or "date unknown"


def plural(count: int, noun: str, nouns: str = "") -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def sign_in(csrf: str, error: str | None = None, username: str = "") -> str:
    body = (
        "<h1>Sign in to see your images</h1>"
        + (layout.alert(error) if error else "")
        + '<div class="card">'
        + layout.form(
            "/portal/sign-in",
            csrf,
            layout.field("username", "User name", value=username, required=True, autocomplete="username")
            + layout.field("password", "Password", "password", required=True, autocomplete="current-password")
            + layout.button("Sign in"),
            label="Sign in",
        )
        + "</div>"
        + layout.next_step(
            "Type the user name and password the imaging department gave you. "
            "Got a link and a code from a patient instead? Open that link; you need no account."
        )
    )
    return layout.page("Sign in", body)


def study_card(row: StudyRow, *, base: str, actions: str, report: Report | None, show_patient: bool) -> str:
    uid = esc(row.uid)
    thumb = f"{base}/images/studies/{quote(row.uid)}/thumbnail"
    what = esc(row.description or "Imaging study")
    modality = esc(", ".join(row.modalities) or "—")
    who = f"<p><strong>{esc(person_name(row.patient.name))}</strong></p>" if show_patient else ""
    report_html = ""
    if report is not None:
        report_html = (
            f"<details><summary>Report: {esc(report.title)}</summary>"
            f'<pre style="white-space:pre-wrap">{esc(report.text)}</pre></details>'
        )
    return (
        f'<li class="card study" data-study="{uid}">'
        f"<h2>{what}</h2>{who}"
        f'<img src="{esc(thumb)}" alt="Preview of {what}" loading="lazy" width="256" height="256">'
        f"<p>{esc(date(row.date))} · {modality} · {row.num_series} series, "
        f"{plural(row.num_instances, 'image')}</p>"
        f"{report_html}"
        f'<div class="actions">{actions}</div></li>'
    )


def study_actions(row: StudyRow, *, base: str, can_share: bool, can_download: bool, can_send: bool) -> str:
    study = quote(row.uid)
    links = [
        f'<a class="button" href="/viewer/viewer?{urlencode({"StudyInstanceUIDs": row.uid})}">Open in viewer</a>',
        f'<a class="button secondary" href="{base}/studies/{study}">Quick look</a>',
    ]
    if can_download:
        links.append(f'<a class="button secondary" href="/portal/download?study={study}">Download</a>')
    if can_share:
        links.append(f'<a class="button secondary" href="/portal/shares/new?study={study}">Share</a>')
    if can_send:
        links.append(f'<a class="button secondary" href="/portal/send?study={study}">Send to my system</a>')
    return "".join(links)


def patient_chooser(people: Sequence[Person], chosen: str | None) -> str:
    if len(people) < 2:
        return ""
    options = "".join(
        f'<option value="{esc(p.patient.fhir_id)}"{" selected" if p.patient.fhir_id == chosen else ""}>'
        f"{esc(person_name(p.patient.name))} (born {esc(date(p.patient.birth_date))})</option>"
        for p in people
    )
    return layout.form(
        "/portal",
        None,
        '<label for="f-patient">Whose images?</label>'
        f'<select id="f-patient" name="patient"><option value="">Everyone</option>{options}</select>'
        + layout.button("Show", "secondary"),
        label="Choose a patient",
        method="get",
    )


def patient_search(search: str) -> str:
    """Staff who may see more patients than a list can hold find one by name or Patient ID."""
    return layout.form(
        "/portal",
        None,
        layout.field(
            "q",
            "Find a patient",
            "search",
            value=search,
            hint="Part of the name (e.g. miller anna) or the start of the Patient ID",
            autocomplete="off",
        )
        + f"<div>{layout.button('Find', 'secondary')}</div>",
        label="Patient search",
        method="get",
    )


def patient_table(people: Sequence[Person], caption: str = "Patients you may see") -> str:
    """Staff's overview: patients they may see, with a link to just that patient's studies."""
    lines = [
        [
            f'<a href="/portal?{urlencode({"patient": p.patient.fhir_id})}">{esc(person_name(p.patient.name))}</a>',
            esc(p.patient.patient_id),
            esc(date(p.patient.birth_date)),
            plural(p.studies, "study", "studies"),
        ]
        for p in people
    ]
    return layout.table(["Patient", "Patient ID", "Born", "Studies"], lines, caption=caption)


def download_all(patient: PatientRow | None, count: int) -> str:
    """A "download all" link when the list shows one patient's studies (and more than one of them)."""
    if patient is None or count < 2:
        return ""
    only, who = patient.fhir_id, person_name(patient.name)
    href = f"/portal/download?{urlencode({'patient': only})}"
    return f'<p><a class="button secondary" href="{esc(href)}">Download all {count} studies of {esc(who)}</a></p>'


def quick_look(row: StudyRow, frames: list[tuple[str, str]], *, back: str) -> str:
    """Rendered images of the study, one under another (a phone scrolls through them)."""
    images = "".join(
        f'<figure><img src="{esc(src)}" alt="{esc(caption)}" loading="lazy"><figcaption>{esc(caption)}'
        "</figcaption></figure>"
        for src, caption in frames
    )
    body = (
        f"<h1>{esc(row.description or 'Imaging study')}</h1>"
        f"<p>{esc(date(row.date))} · {esc(', '.join(row.modalities))} · "
        f"{esc(person_name(row.patient.name))}</p>"
        + layout.next_step(
            "Scroll through the pictures. For measuring and scrolling through slices, use Open in viewer."
        )
        + f'<p><a class="button" href="/viewer/viewer?{urlencode({"StudyInstanceUIDs": row.uid})}">'
        f'Open in viewer</a> <a class="button secondary" href="{esc(back)}">Back to the list</a></p>'
        + (f'<div class="frames card">{images}</div>' if images else "<p>This study has no pictures.</p>")
    )
    return body
