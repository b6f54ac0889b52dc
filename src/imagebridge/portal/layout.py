"""The one HTML layout of every browser page imagebridge serves (portal, import, review queue, shares).

Server-rendered, no framework: a page is a string built from escaped parts. How to use it::

    from imagebridge.portal import layout
    from imagebridge.portal.layout import esc

    body = (
        "<h1>Review queue</h1>"
        + layout.next_step("Pick a study to check, then press Accept or Reject.")
        + f"<p>{esc(name)}</p>"
        + layout.form("/portal/review/accept", csrf, layout.button("Accept"), label="Accept study")
    )
    return layout.response("Review queue", body, nav=layout.nav_for(session.role, current="/portal/review"),
                           who=session.display_name)

    # an error is a page with a way forward, never a stack trace:
    return layout.problem("Study not found", "That study is not in the archive any more.",
                          ("/portal", "Back to your studies"), status=404)

Rules the helpers enforce: ``<html lang>``, a viewport for phones (390 px), landmarks (``header``,
``nav`` with a label, ``main``, ``footer``), a skip link, visible focus, WCAG AA contrast, labels on
every control (:func:`field`), ``Cache-Control: no-store`` on every response (pages show health data).
Forms that change something carry the session's CSRF token (:func:`form`); the portal session
(``imagebridge.portal.session``) checks it. Put any script in ``script=`` (inline, small, vanilla JS).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from fastapi.responses import HTMLResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Content-Type-Options": "nosniff"}

STYLE = """
:root{--ink:#111;--muted:#4a4f57;--accent:#0b57d0;--bg:#f6f7f9;--card:#fff;--bad:#a50e0e;--good:#146c2e}
*{box-sizing:border-box}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:var(--bg);color:var(--ink)}
a{color:var(--accent)}
.skip{position:absolute;left:-999px}.skip:focus{left:.5rem;top:.5rem;background:#fff;padding:.5rem;z-index:9}
header.top{background:#0b2e5c;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header.top a{color:#fff}header.top .brand{font-weight:700;text-decoration:none;margin-right:auto}
nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1rem}
nav a[aria-current=page]{font-weight:700;text-decoration-thickness:3px}
main{max-width:60rem;margin:1rem auto;padding:0 1rem}
.card{background:var(--card);padding:1rem 1.25rem;border-radius:.5rem;box-shadow:0 1px 3px #0002;margin:0 0 1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.2rem;margin:0 0 .5rem}
.next{background:#e8f0fe;border-left:4px solid var(--accent);padding:.5rem .75rem;border-radius:.25rem}
.error{color:var(--bad);background:#fce8e6;padding:.5rem .75rem;border-radius:.3rem}
.ok{color:var(--good);background:#e6f4ea;padding:.5rem .75rem;border-radius:.3rem}
.muted{color:var(--muted)}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=text],input[type=search],input[type=password],input[type=email],input[type=date],input[type=url],input[type=number],
input[type=datetime-local],select,textarea{width:100%;max-width:30rem;padding:.6rem;font-size:1rem;border:1px solid #6b7078;border-radius:.3rem;background:#fff}
fieldset{border:1px solid #c4c7cc;border-radius:.3rem;margin:1rem 0;padding:.5rem 1rem}
fieldset label{font-weight:400;display:flex;gap:.5rem;align-items:flex-start}
button,.button{display:inline-block;font-size:1rem;padding:.6rem 1.1rem;margin:.5rem .5rem 0 0;border-radius:.3rem;
border:1px solid var(--accent);cursor:pointer;text-decoration:none;background:var(--accent);color:#fff;min-height:44px}
button.secondary,.button.secondary{background:#fff;color:var(--accent)}
button.danger{background:#fff;color:var(--bad);border-color:var(--bad)}
:focus-visible{outline:3px solid #f9ab00;outline-offset:2px}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #dde}
.studies{list-style:none;padding:0;margin:0;display:grid;gap:1rem;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr))}
.study img{width:100%;max-height:14rem;object-fit:contain;background:#000;border-radius:.3rem}
.study .actions{display:flex;flex-wrap:wrap}
.secret{font:1.3rem/1.4 ui-monospace,monospace;background:#fff8e1;padding:.5rem;border:1px dashed #b06000;word-break:break-all}
.frames img{max-width:100%;height:auto;background:#000;display:block;margin:.5rem auto}
footer{max-width:60rem;margin:2rem auto;padding:0 1rem;color:var(--muted);font-size:.9rem}
@media (max-width:480px){main{padding:0 .5rem}.card{padding:.75rem}h1{font-size:1.3rem}}
"""


@dataclass(frozen=True)
class Link:
    href: str
    label: str


def esc(value: object) -> str:
    """HTML-escape anything for text or attribute positions."""
    return escape(str(value), quote=True)


def nav_for(role: str | None, *, current: str = "") -> list[Link]:
    """The navigation of a signed-in person: what their role may open (links, not access control)."""
    if role is None:
        return []
    links = [Link("/portal", "My studies" if role in ("patient", "proxy") else "Studies")]
    if role in ("patient", "proxy"):
        links += [Link("/portal/shares", "Shares"), Link("/portal/access-log", "Who saw my images")]
    if role in ("patient", "clinician", "admin"):  # a patient may upload her own disc (staff check it)
        links.append(Link("/portal/imports", "Import"))
    if role == "admin":
        links += [Link("/portal/review", "Review queue"), Link("/portal/admin", "Administration")]
    return links


def page(
    title: str,
    body: str,
    *,
    nav: Sequence[Link] = (),
    current: str = "",
    who: str | None = None,
    csrf: str | None = None,
    script: str = "",
) -> str:
    """A whole HTML document. ``body`` is trusted HTML (escape your values with :func:`esc`)."""
    items = "".join(
        f'<li><a href="{esc(link.href)}"{" aria-current=page" if link.href == current else ""}>'
        f"{esc(link.label)}</a></li>"
        for link in nav
    )
    menu = f'<nav aria-label="Main"><ul>{items}</ul></nav>' if items else ""
    account = ""
    if who is not None:
        signout = (
            form("/portal/sign-out", csrf, button("Sign out", "secondary"), label="Sign out") if csrf else ""
        )
        account = f"<span>Signed in as <strong>{esc(who)}</strong></span>{signout}"
    js = f"<script>{script}</script>" if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} · imagebridge</title><style>{STYLE}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header class="top"><a class="brand" href="/portal">imagebridge</a>{menu}{account}</header>'
        f'<main id="main" tabindex="-1">{body}</main>'
        "<footer>The images stay in this archive; nothing is copied unless you download or send it. "
        "Questions? Ask the imaging department.</footer>"
        f"{js}</body></html>"
    )


def response(
    title: str,
    body: str,
    *,
    status: int = 200,
    nav: Sequence[Link] = (),
    current: str = "",
    who: str | None = None,
    csrf: str | None = None,
    script: str = "",
) -> HTMLResponse:
    """:func:`page` as an HTMLResponse that no cache keeps."""
    html = page(title, body, nav=nav, current=current, who=who, csrf=csrf, script=script)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def problem(
    title: str,
    message: str,
    action: tuple[str, str] = ("/portal", "Go to the start page"),
    *,
    status: int = 400,
) -> HTMLResponse:
    """An error page: what went wrong in plain words and one way forward (``(href, label)``)."""
    href, label = action
    body = (
        f"<h1>{esc(title)}</h1>"
        f'<p class="error" role="alert">{esc(message)}</p>'
        f'<p><a class="button" href="{esc(href)}">{esc(label)}</a></p>'
    )
    return response(title, body, status=status)


def next_step(text: str) -> str:
    """The "what to do next" line every page has."""
    return f'<p class="next"><strong>Next:</strong> {esc(text)}</p>'


def alert(text: str, kind: str = "error") -> str:
    role = "alert" if kind == "error" else "status"
    return f'<p class="{esc(kind)}" role="{role}">{esc(text)}</p>'


def field(
    name: str,
    label: str,
    kind: str = "text",
    *,
    value: str = "",
    required: bool = False,
    hint: str = "",
    **attrs: str,
) -> str:
    """A labelled input (``for``/``id`` pair; a hint tied with ``aria-describedby``)."""
    ident = f"f-{name}"
    described = f' aria-describedby="{ident}-hint"' if hint else ""
    extra = "".join(f' {esc(k.replace("_", "-"))}="{esc(v)}"' for k, v in attrs.items())
    hint_html = f'<small id="{ident}-hint" class="muted">{esc(hint)}</small>' if hint else ""
    return (
        f'<label for="{ident}">{esc(label)}</label>'
        f'<input type="{esc(kind)}" id="{ident}" name="{esc(name)}" value="{esc(value)}"'
        f"{' required' if required else ''}{described}{extra}>{hint_html}"
    )


def checkbox(name: str, label: str, value: str = "1", *, checked: bool = False) -> str:
    return (
        f'<label><input type="checkbox" name="{esc(name)}" value="{esc(value)}"'
        f"{' checked' if checked else ''}> <span>{esc(label)}</span></label>"
    )


def button(text: str, kind: str = "", *, name: str = "", value: str = "") -> str:
    named = f' name="{esc(name)}" value="{esc(value)}"' if name else ""
    return f'<button type="submit" class="{esc(kind)}"{named}>{esc(text)}</button>'


COPY_SCRIPT = """
document.querySelectorAll('[data-copy]').forEach(function (b) {
  b.hidden = !navigator.clipboard;
  b.addEventListener('click', function () {
    var text = document.getElementById(b.dataset.copy).textContent.trim();
    navigator.clipboard.writeText(text).then(function () { b.textContent = 'Copied'; });
  });
});
"""
"""Pass as ``script=`` on a page with :func:`copy_button`s."""


def copy_button(target_id: str, label: str) -> str:
    """A button that copies the text of element ``target_id`` (hidden where the clipboard is not available)."""
    return f'<button type="button" class="secondary" data-copy="{esc(target_id)}">{esc(label)}</button>'


def form(action: str, csrf: str | None, inner: str, *, label: str = "", method: str = "post") -> str:
    """A form; POST forms carry the CSRF token as the hidden field ``csrf``."""
    token = f'<input type="hidden" name="csrf" value="{esc(csrf)}">' if csrf and method == "post" else ""
    aria = f' aria-label="{esc(label)}"' if label else ""
    return f'<form method="{method}" action="{esc(action)}"{aria}>{token}{inner}</form>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, caption: str = "") -> str:
    """A table; cells are trusted HTML (escape values with :func:`esc`)."""
    titles = list(headers)
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in titles)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(titles)}" class="muted">None yet.</td></tr>'
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    region = esc(caption or "Table")
    return (
        f'<div class="scroll" role="region" aria-label="{region}" tabindex="0">'
        f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )
