"""Server-rendered sign-in and consent pages: plain HTML, no script, labelled controls, fits a phone."""

from __future__ import annotations

from html import escape
from typing import Any

from imagebridge.auth.scopes import parse

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;padding:1rem;background:#f6f7f9;color:#111}
main{max-width:28rem;margin:1.5rem auto;background:#fff;padding:1.5rem;border-radius:.5rem;box-shadow:0 1px 3px #0002}
.brand{margin:0 0 .75rem;font-size:.85rem;font-weight:600;letter-spacing:.04em;color:#555;text-transform:uppercase}
h1{font-size:1.4rem;margin:0 0 .5rem}label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=text],input[type=password],select{width:100%;box-sizing:border-box;min-height:2.75rem;padding:.6rem;font:inherit;border:1px solid #777;border-radius:.3rem;background:#fff}
fieldset{border:1px solid #ccc;border-radius:.3rem;margin:1rem 0;padding:.25rem .75rem}legend{font-weight:600;padding:0 .25rem}
fieldset label{font-weight:400;display:flex;gap:.75rem;align-items:center;min-height:2.75rem;margin:0;padding:.35rem 0;cursor:pointer}
fieldset label+label{border-top:1px solid #eee}
input[type=checkbox],input[type=radio]{width:1.25rem;height:1.25rem;margin:0;flex:none;accent-color:#0b57d0}
small{color:#555}.hint{margin:.25rem 0;color:#444;font-size:.95rem}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.25rem}
button{font:inherit;font-weight:600;min-height:2.75rem;padding:.6rem 1.4rem;margin:0;border-radius:.3rem;border:1px solid #0b57d0;cursor:pointer;flex:1 1 8rem}
.primary{background:#0b57d0;color:#fff}.secondary{background:#fff;color:#0b57d0}
.link{background:none;border:none;color:#0b57d0;text-decoration:underline;font-weight:400;padding:.6rem 0;margin-top:.75rem}
.error{color:#a50e0e;background:#fce8e6;padding:.5rem .75rem;border-radius:.3rem}
:focus-visible{outline:3px solid #f9ab00;outline-offset:2px}
"""

_SCOPE_TEXT = {
    "openid": "Confirm who you are to the app",
    "fhirUser": "Tell the app which person you are",
    "launch": "Open with the patient (and encounter) the EHR chose",
    "launch/patient": "Let the app know which patient's record you chose",
    "launch/encounter": "Let the app know which encounter you chose",
    "profile": "See your name and profile",
    "offline_access": "Keep access after you close the app, until you revoke it",
    "online_access": "Keep access while you are using the app",
}
_PERMS = {"c": "add", "r": "see", "u": "change", "d": "delete", "s": "search"}
_RESOURCES = {
    "*": "all kinds of records",
    "ImagingStudy": "imaging studies (scans, X-rays and their images)",
    "Patient": "patient details (name, birth date, record numbers)",
    "Endpoint": "where the images can be fetched from",
    "AuditEvent": "the log of who looked at the records",
}


def describe(scope: str) -> str:
    if scope in _SCOPE_TEXT:
        return _SCOPE_TEXT[scope]
    clinical = parse(scope).clinical
    if not clinical:
        return f"Use the '{scope}' permission"
    parsed = clinical[0]
    what = _RESOURCES.get(parsed.resource, f"{parsed.resource} records")
    verbs = _and([_PERMS[p] for p in "rscud" if p in parsed.permissions])
    whose = {
        "patient": "of the selected patient",
        "user": "of the patients you have access to",
        "system": "of the organisation",
    }[parsed.level]
    return f"{verbs.capitalize()} {what} {whose}"


def _and(words: list[str]) -> str:
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


def person_name(pn: str) -> str:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``) as people read it: ``Family, Given Middle``."""
    parts = [p.strip() for p in pn.split("=")[0].split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · imagebridge</title><style>{_STYLE}</style></head>"
        f'<body><main><p class="brand">imagebridge · secure sign-in</p>{body}</main></body></html>'
    )


def _hidden(fields: dict[str, Any]) -> str:
    return "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(str(v))}">'
        for k, v in fields.items()
        if v is not None
    )


def sign_in(client_name: str, request_fields: dict[str, str], error: str | None = None) -> str:
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        f"<h1>Sign in</h1><p><strong>{escape(client_name)}</strong> is asking to see health records. "
        "Sign in first; on the next page you choose what it may see.</p>"
        f"{alert}"
        '<form method="post" action="authorize">'
        f"{_hidden(request_fields)}"
        '<label for="username">User name</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" autocomplete="current-password" required>'
        '<div class="actions"><button class="primary" type="submit">Sign in</button></div></form>'
    )
    return _page("Sign in", body)


def consent(
    client_name: str,
    user_name: str,
    ticket: str,
    scopes: list[str],
    patients: list[tuple[str, str]],
    launched_for: str | None = None,
) -> str:
    boxes = "".join(
        f'<label><input type="checkbox" name="scope" value="{escape(s)}" checked> '
        f"<span>{escape(describe(s))} <small>({escape(s)})</small></span></label>"
        for s in scopes
    )
    chooser = ""
    if len(patients) > 1:
        radios = "".join(
            f'<label><input type="radio" name="patient" value="{escape(pid)}" required{" checked" if i == 0 else ""}> '
            f"<span>{escape(label)}</span></label>"
            for i, (pid, label) in enumerate(patients)
        )
        chooser = f"<fieldset><legend>Whose records?</legend>{radios}</fieldset>"
    body = (
        f"<h1>Allow access?</h1><p>Signed in as <strong>{escape(user_name)}</strong>.</p>"
        + (f"<p>Opened from the EHR for <strong>{escape(launched_for)}</strong>.</p>" if launched_for else "")
        + f"<p><strong>{escape(client_name)}</strong> would like to:</p>"
        f'<form method="post" action="consent">{_hidden({"ticket": ticket})}{chooser}'
        "<fieldset><legend>What the app may do</legend>"
        f'<p class="hint">Untick anything you do not want to share.</p>{boxes}</fieldset>'
        '<div class="actions"><button class="primary" type="submit" name="decision" value="approve">Allow</button>'
        '<button class="secondary" type="submit" name="decision" value="deny">Deny</button></div></form>'
    )
    return _page("Allow access", body)


def error(message: str) -> str:
    return _page(
        "Cannot continue", f'<h1>Cannot continue</h1><p class="error" role="alert">{escape(message)}</p>'
    )


def ehr_sign_in(error: str | None = None) -> str:
    """The clinician's sign-in to the EHR launcher (the EHR's own session, which EHR launches reuse)."""
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        "<h1>EHR sign-in</h1><p>Clinicians and administrators sign in here to open apps for a patient.</p>"
        f'{alert}<form method="post" action="ehr/sign-in">'
        '<label for="username">User name</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required autofocus>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" autocomplete="current-password" required>'
        '<div class="actions"><button class="primary" type="submit">Sign in</button></div></form>'
    )
    return _page("EHR sign-in", body)


def ehr_launcher(
    user_name: str, apps: list[tuple[str, str]], patients: list[tuple[str, str]], error: str | None = None
) -> str:
    """Pick an app and a patient; the EHR then opens the app's launch URL with a one-time launch value."""
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    if not apps:
        choose = (
            "<p>No app has a launch URL yet. An administrator adds one with "
            "<code>imagebridge client add ID --redirect-uri URL --launch-url URL</code>.</p>"
        )
    else:
        app_options = "".join(f'<option value="{escape(cid)}">{escape(name)}</option>' for cid, name in apps)
        patient_options = "".join(
            f'<option value="{escape(pid)}">{escape(label)}</option>' for pid, label in patients
        )
        choose = (
            '<form method="post" action="ehr/launch">'
            f'<label for="client_id">App</label><select id="client_id" name="client_id">{app_options}</select>'
            f'<label for="patient">Patient</label><select id="patient" name="patient" required>{patient_options}</select>'
            '<label for="encounter">Encounter (optional)</label>'
            '<input type="text" id="encounter" name="encounter" pattern="[A-Za-z0-9.-]{1,64}">'
            '<div class="actions"><button class="primary" type="submit">Launch app</button></div></form>'
        )
    body = (
        f"<h1>Launch an app</h1><p>Signed in as <strong>{escape(user_name)}</strong>.</p>{alert}{choose}"
        '<form method="post" action="ehr/sign-out">'
        '<button class="link" type="submit">Sign out</button></form>'
    )
    return _page("Launch an app", body)
