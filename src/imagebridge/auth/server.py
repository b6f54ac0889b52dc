"""The authorization server: the grants of RFC 6749 with SMART's profile, over the stores in this package.

Framework-free: the HTTP surface (``imagebridge.oauth``) hands in form fields and gets back
plain values or an :class:`~imagebridge.auth.errors.OAuthError`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from imagebridge.auth import assertions, introspection, pkce
from imagebridge.auth.clients import ALL, AccessGrant, Client, Clients
from imagebridge.auth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from imagebridge.auth.jwks import SigningKey
from imagebridge.auth.launches import LaunchContext, Launches
from imagebridge.auth.policy import Principal
from imagebridge.auth.scopes import Scopes, parse
from imagebridge.auth.tokens import Grant, TokenRecord, Tokens, digest, revocations
from imagebridge.auth.users import Role, SignInThrottle, User, Users

ACCESS_LIFETIME = 3600
BACKEND_LIFETIME = 300
REFRESH_LIFETIME = 30 * 24 * 3600
CODE_LIFETIME = 120
TICKET_LIFETIME = 600
SESSION_LIFETIME = 8 * 3600
PRINCIPAL_CACHE_SECONDS = 1.0
PRINCIPAL_CACHE_SIZE = 10_000
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
ADMIN_POLICY = AccessGrant(ALL, ALL)


@dataclass(frozen=True)
class Endpoints:
    """Where this server is, as clients see it (each request may come through a different name)."""

    base: str

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    @property
    def issuer(self) -> str:
        return f"{self.base}/oauth"

    @property
    def token(self) -> str:
        return f"{self.base}/oauth/token"

    @property
    def introspect(self) -> str:
        return f"{self.base}/oauth/introspect"

    @property
    def revoke(self) -> str:
        return f"{self.base}/oauth/revoke"


class RedirectableError(Exception):
    """An error reported to the client by redirecting back to it (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: OAuthError, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.description)
        self.error, self.redirect_uri, self.state = error, redirect_uri, state


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    state: str | None = None
    nonce: str | None = None
    aud: str | None = None
    launch: str | None = None
    """The EHR launch this authorization belongs to (SMART ``launch`` parameter), if any."""

    def scopes(self) -> Scopes:
        return parse(self.scope)


@dataclass
class AuthorizationServer:
    engine: Engine
    key: SigningKey
    users: Users = field(init=False)
    clients: Clients = field(init=False)
    tokens: Tokens = field(init=False)
    ledger: assertions.JtiLedger = field(init=False)
    launches: Launches = field(init=False)
    sign_ins: SignInThrottle = field(init=False, default_factory=SignInThrottle)
    _principals: dict[str, tuple[float, int, Principal]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.launches = Launches(self.engine)
        self.users = Users(self.engine)
        self.clients = Clients(self.engine)
        self.tokens = Tokens(self.engine)
        self.ledger = assertions.JtiLedger(self.engine)

    # --- /authorize -------------------------------------------------------------------------

    def check_authorization(self, params: Mapping[str, str], where: Endpoints) -> AuthorizationRequest:
        """Validate an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, SMART ``aud``).

        Errors about the client or redirect URI are raised as OAuthError (shown to the user);
        everything else as RedirectableError (sent back to the client)."""
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            raise InvalidClient("unknown client_id; register the app first")
        redirect_uri = params.get("redirect_uri") or (
            client.redirect_uris[0] if len(client.redirect_uris) == 1 else ""
        )
        if redirect_uri not in client.redirect_uris:
            raise InvalidRequest("redirect_uri is not one registered for this client")
        state = params.get("state")
        try:
            if params.get("response_type") != "code":
                raise UnsupportedResponseType("response_type must be 'code'")
            challenge = pkce.check_challenge(
                params.get("code_challenge"), params.get("code_challenge_method")
            )
            aud = params.get("aud")
            if aud is not None and aud.rstrip("/") != where.fhir:
                raise InvalidRequest(f"aud must be this server's FHIR base, {where.fhir}")
            scopes = self._requestable(client, parse(params.get("scope")), user_facing=True)
            launch = params.get("launch") or None
            if launch is not None:
                self._launch_for(launch, client.client_id, scopes)
            elif scopes.has("launch"):
                raise InvalidScope("the 'launch' scope belongs to an EHR launch; send the launch parameter")
        except OAuthError as exc:
            raise RedirectableError(exc, redirect_uri, state) from exc
        return AuthorizationRequest(
            client.client_id, redirect_uri, scopes.text, challenge, state, params.get("nonce"), aud, launch
        )

    def _launch_for(self, launch: str, client_id: str, scopes: Scopes) -> LaunchContext:
        """The launch context an EHR created for this app (SMART App Launch §2.0.1); invalid_request if none."""
        context = self.launches.find(launch)
        if context is None or context.client_id != client_id:
            raise InvalidRequest("the launch parameter is not one the EHR issued for this app")
        if not context.usable():
            raise InvalidRequest(
                "the launch has expired or was used already; launch the app again from the EHR"
            )
        if not scopes.has("launch"):
            raise InvalidRequest("an EHR launch asks for the 'launch' scope along with the launch parameter")
        return context

    def launch_context(self, request: AuthorizationRequest) -> LaunchContext | None:
        """The EHR launch context bound to ``request``, or None for a standalone launch.

        A launch that has since expired or been used is reported to the app (invalid_request)."""
        if request.launch is None:
            return None
        try:
            return self._launch_for(request.launch, request.client_id, request.scopes())
        except OAuthError as exc:
            raise RedirectableError(exc, request.redirect_uri, request.state) from exc

    def pre_approved(self, request: AuthorizationRequest, user: User) -> bool:
        """SMART "no clicks": the organisation pre-approved the app, and the clinician who launched it is signed in."""
        context = self.launch_context(request)
        client = self.clients.get(request.client_id)
        return bool(context and client and client.pre_approved and context.username == user.username)

    def sign_session(self, user: User) -> str:
        """A signed sign-in session for the authorization server's cookie (the clinician stays signed in)."""
        claims = {"username": user.username, "exp": int(time.time()) + SESSION_LIFETIME}
        return self.key.sign(claims, typ="ib-session")

    def read_session(self, value: str | None) -> User | None:
        claims = self.key.verify(value, typ="ib-session") if value else None
        if claims is None or not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            return None
        return self.users.get(str(claims.get("username", "")))

    def sign_ticket(self, request: AuthorizationRequest, user: User) -> str:
        """The signed, short-lived proof that ``user`` signed in for ``request`` (carried to the consent page)."""
        claims = {**request.__dict__, "username": user.username, "exp": int(time.time()) + TICKET_LIFETIME}
        return self.key.sign(claims, typ="ib-ticket")

    def read_ticket(self, ticket: str) -> tuple[AuthorizationRequest, User]:
        claims = self.key.verify(ticket, typ="ib-ticket")
        if claims is None or not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise InvalidRequest("the sign-in has expired; start again from the app")
        user = self.users.get(str(claims.get("username", "")))
        if user is None:
            raise InvalidRequest("the user no longer exists")
        fields = AuthorizationRequest.__dataclass_fields__
        return AuthorizationRequest(**{k: v for k, v in claims.items() if k in fields}), user

    def issue_code(
        self, request: AuthorizationRequest, user: User, granted: Scopes, patient: str | None
    ) -> str:
        """RFC 6749 §4.1.2: a one-time code for what the user approved; an EHR launch fixes the patient."""
        data: dict[str, Any] = {
            "code_challenge": request.code_challenge,
            "redirect_uri": request.redirect_uri,
        }
        if request.launch is not None:
            context = self._use_launch(request, user)
            patient = context.patient
            if context.encounter:
                data["encounter"] = context.encounter
        elif patient is not None and patient not in user.patients:
            raise InvalidRequest("that patient is not one this user may act for")
        if patient is None and any(s.level == "patient" for s in granted.clinical):
            if len(user.patients) == 1:
                patient = user.patients[0]
            else:
                granted = parse(" ".join(s for s in granted.items() if not s.startswith("patient/")))
        if request.nonce:
            data["nonce"] = request.nonce
        grant = Grant(request.client_id, granted.text, patient, user.fhir_user, user.username, data=data)
        code, _ = self.tokens.issue("code", grant, CODE_LIFETIME)
        return code

    def _use_launch(self, request: AuthorizationRequest, user: User) -> LaunchContext:
        """Bind the launch to this authorization, once; a problem goes back to the app as invalid_request."""
        try:
            context = self.launch_context(request)
            if context is None:
                raise InvalidRequest("this authorization is not an EHR launch")
            if context.username != user.username:
                raise InvalidRequest("this launch was started by another user; sign in as that user")
            if user.patients and context.patient not in user.patients:
                raise InvalidRequest("the launching user may not act for the launch's patient")
            if not self.launches.use(str(request.launch)):
                raise InvalidRequest("the launch has expired or was used already; launch the app again")
        except OAuthError as exc:
            raise RedirectableError(exc, request.redirect_uri, request.state) from exc
        return context

    # --- /token -----------------------------------------------------------------------------

    def token(self, form: Mapping[str, str], where: Endpoints) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._authorization_code(form, where)
        if grant_type == "refresh_token":
            return self._refresh(form, where)
        if grant_type == "client_credentials":
            return self._client_credentials(form, where)
        raise UnsupportedGrantType(f"grant_type must be one of {', '.join(GRANT_TYPES)}")

    def authenticate_client(self, form: Mapping[str, str], audiences: set[str]) -> Client:
        """The client named in the request; confidential clients must prove it with an assertion."""
        assertion = form.get("client_assertion")
        client_id = form.get("client_id") or (_unverified_issuer(assertion) if assertion else None)
        client = self.clients.get(client_id or "")
        if client is None:
            raise InvalidClient("unknown client")
        if assertion or client.confidential:
            if form.get("client_assertion_type") != assertions.ASSERTION_TYPE or not assertion:
                raise InvalidClient(
                    f"this client authenticates with client_assertion_type={assertions.ASSERTION_TYPE}"
                )
            assertions.verify(assertion, client, audiences, self.ledger)
        return client

    def _authorization_code(self, form: Mapping[str, str], where: Endpoints) -> dict[str, Any]:
        client = self.authenticate_client(form, {where.token})
        record = self.tokens.redeem_code(form.get("code", ""))
        if record is None or not record.active():
            raise InvalidGrant("the authorization code is invalid, expired or already used")
        grant = record.grant
        if grant.client_id != client.client_id:
            raise InvalidGrant("the authorization code was issued to another client")
        if form.get("redirect_uri") != grant.data["redirect_uri"]:
            raise InvalidGrant("redirect_uri differs from the one in the authorization request")
        pkce.verify(form.get("code_verifier"), grant.data["code_challenge"])
        return self._respond(grant, ACCESS_LIFETIME, where, refresh=True, id_token=True)

    def _refresh(self, form: Mapping[str, str], where: Endpoints) -> dict[str, Any]:
        client = self.authenticate_client(form, {where.token})
        record = self.tokens.find(form.get("refresh_token", ""))
        if record is None or record.kind != "refresh" or not record.active():
            raise InvalidGrant("the refresh token is invalid, expired or revoked")
        if record.grant.client_id != client.client_id:
            raise InvalidGrant("the refresh token was issued to another client")
        grant = record.grant
        if form.get("scope"):
            asked = parse(form["scope"])
            if not set(asked.items()) <= set(parse(grant.scope).items()):
                raise InvalidScope("a refresh may narrow the scopes, never widen them (RFC 6749 §6)")
            grant = Grant(**{**grant.__dict__, "scope": asked.text})
        return self._respond(grant, ACCESS_LIFETIME, where, refresh=False, id_token=False)

    def _client_credentials(self, form: Mapping[str, str], where: Endpoints) -> dict[str, Any]:
        """SMART Backend Services: private_key_jwt only; system scopes the client was granted; ≤ 300 s."""
        if not form.get("client_assertion"):
            raise InvalidClient("backend services authenticate with a client_assertion (private_key_jwt)")
        client = self.authenticate_client(form, {where.token})
        if not client.confidential:
            raise UnauthorizedClient("only confidential clients may use client_credentials")
        scopes = parse(form.get("scope"))
        if not scopes.clinical or scopes.names or scopes.levels() != {"system"}:
            raise InvalidScope("client_credentials grants system/ scopes only")
        allowed = set(parse(client.scope).items())
        refused = [s for s in scopes.items() if s not in allowed]
        if refused:
            raise InvalidScope(f"this client may not be granted: {' '.join(refused)}")
        grant = Grant(client.client_id, scopes.text)
        return self._respond(grant, BACKEND_LIFETIME, where, refresh=False, id_token=False)

    def _respond(
        self, grant: Grant, lifetime: int, where: Endpoints, *, refresh: bool, id_token: bool
    ) -> dict[str, Any]:
        """RFC 6749 §5.1 with SMART's ``scope`` and launch context, and OpenID's ``id_token``."""
        token, record = self.tokens.issue("access", grant, lifetime)
        scopes = parse(grant.scope)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": grant.scope,
        }
        if grant.patient:
            body["patient"] = grant.patient
        if "encounter" in grant.data:
            body["encounter"] = grant.data["encounter"]
        if refresh and (scopes.has("offline_access") or scopes.has("online_access")):
            body["refresh_token"], _ = self.tokens.issue("refresh", grant, REFRESH_LIFETIME)
        if id_token and scopes.has("openid") and grant.subject:
            body["id_token"] = self._id_token(grant, record, where)
        return body

    def _id_token(self, grant: Grant, record: TokenRecord, where: Endpoints) -> str:
        """OpenID Connect Core §2 with SMART's ``fhirUser`` (an absolute URL of the user's resource)."""
        claims: dict[str, Any] = {
            "iss": where.issuer,
            "sub": grant.subject,
            "aud": grant.client_id,
            "iat": int(record.issued_at.timestamp()),
            "exp": int(record.expires_at.timestamp()),
        }
        if parse(grant.scope).has("fhirUser") and grant.fhir_user:
            claims["fhirUser"] = f"{where.fhir}/{grant.fhir_user}"
        if "nonce" in grant.data:
            claims["nonce"] = grant.data["nonce"]
        return self.key.sign(claims)

    # --- scopes, principals, introspection ----------------------------------------------------

    def _requestable(self, client: Client, scopes: Scopes, *, user_facing: bool) -> Scopes:
        if user_facing and "system" in scopes.levels():
            raise InvalidScope("system/ scopes are for backend services (client_credentials)")
        if client.scope:
            scopes = scopes.only(
                set(parse(client.scope).items())
                | {"openid", "fhirUser", "offline_access", "online_access", "launch", "launch/patient"}
            )
        if not scopes.items():
            raise InvalidScope("none of the requested scopes can be granted to this client")
        return scopes

    def principal(self, token: str) -> Principal:
        """The principal behind a bearer access token; InvalidToken if it is not an active one.

        A resolved token is remembered for at most PRINCIPAL_CACHE_SECONDS (never past its
        expiry): a viewer's burst of frame requests costs one lookup. Any revocation made in this
        process forgets every remembered token at once; one made by another process (a second
        worker, the CLI) takes effect within that second."""
        key = digest(token)
        now = time.monotonic()
        cached = self._principals.get(key)
        if cached is not None and cached[0] > now and cached[1] == revocations():
            return cached[2]
        generation = revocations()
        principal, expires_at = self._resolve(token)
        ttl = min(PRINCIPAL_CACHE_SECONDS, (expires_at - datetime.now(UTC)).total_seconds())
        if ttl > 0:
            if len(self._principals) >= PRINCIPAL_CACHE_SIZE:
                self._principals.clear()
            self._principals[key] = (now + ttl, generation, principal)
        return principal

    def _resolve(self, token: str) -> tuple[Principal, datetime]:
        record = self.tokens.find(token)
        if record is None or record.kind != "access" or not record.active():
            raise InvalidToken("the access token is unknown, expired or revoked")
        grant = record.grant
        user = self.users.get(grant.subject) if grant.subject else None
        client = self.clients.get(grant.client_id)
        if client is None and "policy" not in grant.data:
            raise InvalidToken("the client this token was issued to has been removed")
        policy = client.policy if client else AccessGrant.from_json(grant.data["policy"])
        share = grant.data.get("share")
        return Principal(
            client_id=grant.client_id,
            scopes=parse(grant.scope),
            patient=grant.patient,
            fhir_user=grant.fhir_user,
            subject=grant.subject,
            user_patients=_user_reach(user),
            client_policy=policy,
            studies=tuple(share["studies"]) if share else None,
            share=share["id"] if share else None,
            download=bool(share["download"]) if share else True,
            role=str(user.role.value) if user is not None else None,
        ), record.expires_at

    def introspect(self, form: Mapping[str, str], bearer: str | None, where: Endpoints) -> dict[str, Any]:
        """RFC 7662 §2: the caller must authenticate; then the token's state, SMART fields included."""
        self._authorize_introspection(form, bearer, where)
        token = form.get("token")
        if not token:
            raise InvalidRequest("the 'token' parameter is required (RFC 7662 §2.1)")
        record = self.tokens.find(token)
        if record and "policy" not in record.grant.data and self.clients.get(record.grant.client_id) is None:
            record = None
        return introspection.response(record, where.issuer, where.fhir)

    def _authorize_introspection(self, form: Mapping[str, str], bearer: str | None, where: Endpoints) -> None:
        if bearer is not None:
            caller = self.principal(bearer)
            if not any(s.level == "system" and "r" in s.permissions for s in caller.scopes.clinical):
                raise IntrospectionForbidden(
                    "introspection needs a backend-services token with a system/ read scope"
                )
            return
        if form.get("client_assertion"):
            client = self.authenticate_client(form, {where.introspect, where.token})
            if not client.confidential:
                raise IntrospectionForbidden("only confidential clients may introspect")
            return
        raise InvalidToken("introspection requires a bearer token or a client assertion")


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class IntrospectionForbidden(OAuthError):
    error = "insufficient_scope"
    status = 403


def _user_reach(user: User | None) -> tuple[str, ...] | None:
    if user is None:
        return ()
    if user.role in (Role.CLINICIAN, Role.ADMIN) and not user.patients:
        return None
    return user.patients


def _unverified_issuer(assertion: str) -> str | None:
    """The ``iss`` of a JWT before it is verified: only used to find which client's keys to verify it with."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None
