"""Browser sessions of the portal: a signed, HttpOnly cookie that carries an access token.

The portal is a first-party client of our own authorization server: signing in issues an
ordinary access token (``user/*.rs``, one hour) and every page resolves it through
``app.state.authority`` into a :class:`~imagebridge.auth.policy.Principal`, exactly as a bearer
token on ``/dicomweb`` or ``/fhir`` is resolved. Signing out revokes the token, so a copied
cookie stops working at once. A share recipient gets a session of the same shape holding the
share's token (``services.sharing``).

The cookie is a JWS signed with the server's key (``auth.jwks``), so its CSRF value cannot be
forged; it is ``HttpOnly``, ``SameSite=Lax`` and ``Secure`` when the site is served over https.
Forms that change something carry the CSRF value (``layout.form``) and :func:`check_csrf` compares.

How another page uses it::

    from imagebridge.portal.session import SignedIn

    @router.get("/portal/review")
    async def review(session: SignedIn) -> Response: ...   # session.principal, session.role, session.csrf
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.errors import InvalidToken
from imagebridge.auth.policy import Principal
from imagebridge.auth.server import ACCESS_LIFETIME, AuthorizationServer
from imagebridge.auth.tokens import Grant
from imagebridge.auth.users import User

USER_COOKIE = "ib_session"
SHARE_COOKIE = "ib_share"
PORTAL_CLIENT = "imagebridge-portal"
PORTAL_SCOPE = "openid fhirUser user/*.rs"
_TYP = "ib-portal-session"
Kind = Literal["user", "share"]


class SignInRequired(Exception):
    """No usable session: the browser is sent to the sign-in page (or the share's code page)."""

    def __init__(self, kind: Kind = "user", share: str | None = None, message: str = "") -> None:
        super().__init__(message or "please sign in")
        self.kind, self.share, self.message = kind, share, message


class CsrfFailure(Exception):
    """A form came without this session's CSRF value (a forged or stale form)."""


@dataclass(frozen=True)
class Session:
    kind: Kind
    token: str
    csrf: str
    principal: Principal
    user: User | None = None
    share: str | None = None

    @property
    def role(self) -> str | None:
        return self.user.role.value if self.user else None

    @property
    def display_name(self) -> str:
        return self.user.display_name if self.user else "Shared images"


def issue_user_token(authz: AuthorizationServer, user: User) -> str:
    """An access token for ``user`` as the portal (a first-party client, no consent screen)."""
    grant = Grant(
        PORTAL_CLIENT,
        PORTAL_SCOPE,
        patient=user.patients[0] if len(user.patients) == 1 and user.role.value == "patient" else None,
        fhir_user=user.fhir_user,
        subject=user.username,
        data={"policy": AccessGrant().to_json(), "portal": True},
    )
    token, _ = authz.tokens.issue("access", grant, ACCESS_LIFETIME)
    return token


def _secure(request: Request) -> bool:
    base = request.app.state.archive.settings.public_base_url or ""
    return request.url.scheme == "https" or base.startswith("https://")


def start(request: Request, response: Response, kind: Kind, token: str, *, share: str | None = None) -> str:
    """Put a new session cookie on ``response``; returns its CSRF value."""
    csrf = secrets.token_urlsafe(24)
    claims: dict[str, Any] = {"tok": token, "csrf": csrf, "exp": int(time.time()) + ACCESS_LIFETIME}
    if share:
        claims["share"] = share
    value = request.app.state.authorization.key.sign(claims, typ=_TYP)
    response.set_cookie(
        USER_COOKIE if kind == "user" else SHARE_COOKIE,
        value,
        max_age=ACCESS_LIFETIME,
        path="/",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    return csrf


def end(request: Request, response: Response, kind: Kind) -> None:
    """Revoke the session's token and clear its cookie."""
    claims = _claims(request, kind)
    if claims:
        request.app.state.authorization.tokens.revoke(str(claims["tok"]))
    response.delete_cookie(USER_COOKIE if kind == "user" else SHARE_COOKIE, path="/")


def _claims(request: Request, kind: Kind) -> dict[str, Any] | None:
    raw = request.cookies.get(USER_COOKIE if kind == "user" else SHARE_COOKIE)
    if not raw:
        return None
    claims = request.app.state.authorization.key.verify(raw, typ=_TYP)
    if not claims or not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        return None
    return claims


def _load(request: Request, kind: Kind) -> Session | None:
    claims = _claims(request, kind)
    if claims is None:
        return None
    token = str(claims["tok"])
    try:
        principal: Principal = request.app.state.authority.principal(token)
    except InvalidToken:
        return None
    user = None
    if kind == "user":
        user = request.app.state.authorization.users.get(principal.subject or "")
        if user is None:
            return None
    share = claims.get("share")
    return Session(kind, token, str(claims["csrf"]), principal, user, str(share) if share else None)


async def current(request: Request, kind: Kind) -> Session | None:
    """The request's session of ``kind`` if its cookie is valid and its token still active."""
    return await run_in_threadpool(_load, request, kind)


async def signed_in(request: Request) -> Session:
    """FastAPI dependency: the signed-in person's session, or :class:`SignInRequired`."""
    session = await current(request, "user")
    if session is None:
        raise SignInRequired("user")
    return session


async def any_session(request: Request) -> Session:
    """A person's session, else a share recipient's (pages both may use: viewer, downloads)."""
    session = await current(request, "user") or await current(request, "share")
    if session is None:
        raise SignInRequired("user")
    return session


async def check_csrf(request: Request, session: Session) -> dict[str, str]:
    """The submitted form's text fields, once its ``csrf`` matches the session's; else :class:`CsrfFailure`."""
    form = await checked_form(request, session)
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def checked_form(request: Request, session: Session) -> FormData:
    """Like :func:`check_csrf`, but the whole form (repeated fields: ``form.getlist(name)``)."""
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
        raise CsrfFailure()
    return form


SignedIn = Annotated[Session, Depends(signed_in)]
AnySession = Annotated[Session, Depends(any_session)]
