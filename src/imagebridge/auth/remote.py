"""Integrated mode: an outside EHR is the token authority (SMART Imaging Access §"Authorization").

:class:`EhrAuthority` implements ``auth.authority.TokenAuthority``. For each bearer token it

1. asks the EHR's introspection endpoint (RFC 7662 §2, SMART App Launch 2.2 "Token
   Introspection"), authenticating with this server's own SMART Backend Services token
   (``client_credentials`` + ``private_key_jwt``, RFC 7523 §2.2), kept until shortly before it expires;
2. reuses an active answer for at most ``min(exp - now, cache_seconds)`` (≤ 60 s: RFC 7662 §4
   trades revocation latency for load; a revocation at the EHR bites within that budget), an
   inactive one for ``negative_cache_seconds``; entries are keyed by the SHA-256 of the token;
3. maps the token's ``patient`` (the EHR's logical id) to this archive's patient: it reads the
   EHR's ``Patient/{id}`` with the backend token, picks the MRN by the configured rule, turns the
   identifier's system (or assigner) into an Issuer of Patient ID, and keys the archive patient as
   ``/fhir`` does. The principal's ``patient`` is that archive key, so ``auth.policy`` compares
   like with like.

The EHR being unreachable is :class:`~imagebridge.errors.UpstreamUnavailable` (503 with
Retry-After), never a 500 and never a pass. This server's own backend token is never accepted
as a caller's token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from imagebridge.auth import assertions
from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.errors import AccessDenied, InvalidToken, OAuthError
from imagebridge.auth.policy import Principal
from imagebridge.auth.scopes import ClinicalScope, Scopes, parse_one
from imagebridge.config import MRN_RULE, EhrSettings
from imagebridge.errors import ImageBridgeError, UpstreamUnavailable

log = logging.getLogger(__name__)

PatientKey = Callable[[str, str], str]
"""(PatientID, IssuerOfPatientID) -> the archive's patient key (the ``/fhir`` Patient id)."""
IssuerOf = Callable[[str], str]
"""An identifier system -> the Issuer of Patient ID it stands for (``fhir.identifiers.issuer_of``)."""
SystemOf = Callable[[str], str]
"""An Issuer of Patient ID -> its identifier system (``fhir.identifiers.system_of``)."""
ClientPolicy = Callable[[str], AccessGrant]
"""A client_id -> the access its system/ scopes were pre-authorized for here (empty if unknown)."""

BACKEND_MARGIN = 30
DISCOVERY_SECONDS = 3600
_MAX_ENTRIES = 10_000
_FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class EhrPatient:
    """An EHR Patient as this archive knows it."""

    ehr_id: str
    patient_id: str
    issuer: str
    key: str


class _Expiring:
    """A small thread-safe map whose entries lapse at a wall-clock time."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return False, None
            if entry[0] <= time.time():
                del self._items[key]
                return False, None
            return True, entry[1]

    def put(self, key: str, value: Any, seconds: float) -> None:
        if seconds <= 0:
            return
        now = time.time()
        with self._lock:
            if len(self._items) >= _MAX_ENTRIES:
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
                if len(self._items) >= _MAX_ENTRIES:
                    self._items.clear()
            self._items[key] = (now + seconds, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class EhrAuthority:
    def __init__(
        self,
        settings: EhrSettings,
        *,
        patient_key: PatientKey,
        issuer_of: IssuerOf,
        system_of: SystemOf,
        client_policy: ClientPolicy,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._patient_key, self._issuer_of, self._system_of = patient_key, issuer_of, system_of
        self._client_policy = client_policy
        self._http = httpx.Client(timeout=settings.timeout, transport=transport, follow_redirects=False)
        self._key, self._alg = load_private_key(settings)
        self._lock = threading.Lock()
        self._discovered: tuple[float, dict[str, Any]] | None = None
        self._backend: tuple[float, str] | None = None
        self._tokens = _Expiring()
        self._patients = _Expiring()
        self._references = _Expiring()

    # --- TokenAuthority ------------------------------------------------------------------------

    def principal(self, token: str) -> Principal:
        """The principal behind ``token`` as the EHR describes it; InvalidToken if it is not active."""
        key = digest(token)
        found, cached = self._tokens.get(key)
        if found:
            if cached is None or cached[0] <= time.time():
                raise InvalidToken("the access token is not active at the EHR")
            return cached[1]
        if self._backend is not None and key == digest(self._backend[1]):
            raise InvalidToken("this server's own backend-services token is not a caller's token")
        body = self._introspect(token)
        if body.get("active") is not True:
            self._tokens.put(key, None, self.settings.negative_cache_seconds)
            raise InvalidToken("the access token is unknown, expired or revoked at the EHR")
        exp = self._check(body)
        principal = self._principal(body)
        self._tokens.put(key, (exp, principal), min(exp - time.time(), self.settings.cache_seconds))
        return principal

    def _check(self, body: dict[str, Any]) -> float:
        """RFC 7662 §2.2 and SMART's SHALL fields; the token must be the EHR's and not ours."""
        exp = body.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= time.time():
            raise InvalidToken("the EHR describes the token as expired or without an exp")
        if not isinstance(body.get("client_id"), str) or not isinstance(body.get("scope"), str):
            raise InvalidToken("the EHR's introspection answer lacks client_id or scope")
        if body["client_id"] == self.settings.client_id:
            raise InvalidToken("this server's own backend-services token is not a caller's token")
        issuer = body.get("iss")
        if issuer is not None and issuer != self.issuer():
            raise InvalidToken("the token was issued by another authorization server")
        return float(exp)

    def _principal(self, body: dict[str, Any]) -> Principal:
        scopes = lenient_scopes(body["scope"])
        patient = body.get("patient")
        key = self.ehr_patient(patient).key if isinstance(patient, str) and patient else None
        fhir_user = body.get("fhirUser")
        subject = body.get("sub")
        return Principal(
            client_id=body["client_id"],
            scopes=scopes,
            patient=key,
            fhir_user=fhir_user if isinstance(fhir_user, str) else None,
            subject=subject if isinstance(subject, str) else None,
            user_patients=None if self.settings.trust_user_scopes else (),
            client_policy=self._client_policy(body["client_id"]),
        )

    def forget(self) -> None:
        """Drop every cached introspection answer and patient mapping (tests, key rotation)."""
        self._tokens.clear()
        self._patients.clear()
        self._references.clear()

    # --- patients --------------------------------------------------------------------------------

    def ehr_patient(self, ehr_id: str) -> EhrPatient:
        """The archive patient behind the EHR's ``Patient/{ehr_id}``; AccessDenied if there is none."""
        found, cached = self._patients.get(ehr_id)
        if found:
            return cached
        if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", ehr_id):
            raise AccessDenied(f"the token's patient '{ehr_id[:70]}' is not a FHIR logical id")
        response = self._get(f"{self.settings.fhir_base}/Patient/{ehr_id}")
        if response.status_code in (404, 410):
            raise AccessDenied(f"the EHR has no Patient/{ehr_id}")
        resource = _json(response, f"Patient/{ehr_id}")
        identifier = mrn_identifier(resource, self.settings.mrn_identifier)
        if identifier is None:
            raise AccessDenied(
                f"the EHR's Patient/{ehr_id} has no identifier matching {self.settings.mrn_identifier}"
            )
        mrn, authority = identifier
        issuer = self.settings.issuers.get(authority, self._issuer_of(authority))
        patient = EhrPatient(ehr_id, mrn, issuer, self._patient_key(mrn, issuer))
        self._patients.put(ehr_id, patient, self.settings.patient_cache_seconds)
        self._references.put(patient.key, ehr_id, self.settings.patient_cache_seconds)
        return patient

    def archive_patient(self, reference: str) -> str:
        """The archive key for a search's ``patient``: an EHR Patient id (as the app knows it)."""
        return self.ehr_patient(reference).key

    def subject(self, key: str, patient_id: str, issuer: str) -> str | None:
        """The absolute URL of the EHR's Patient for an archive patient, if the EHR has exactly one."""
        found, ehr_id = self._references.get(key)
        if not found:
            ehr_id = self._find_ehr_patient(patient_id, issuer)
            self._references.put(key, ehr_id, self.settings.patient_cache_seconds)
        return f"{self.settings.fhir_base}/Patient/{ehr_id}" if ehr_id else None

    def _find_ehr_patient(self, patient_id: str, issuer: str) -> str | None:
        systems = [s for s, i in self.settings.issuers.items() if i == issuer] or [self._system_of(issuer)]
        for system in systems:
            response = self._get(
                f"{self.settings.fhir_base}/Patient", params={"identifier": f"{system}|{patient_id}"}
            )
            if response.status_code != 200:
                continue
            bundle = _json(response, "a Patient search")
            ids = {
                e["resource"]["id"]
                for e in bundle.get("entry", [])
                if isinstance(e, dict) and isinstance(e.get("resource"), dict) and "id" in e["resource"]
            }
            if len(ids) == 1:
                return str(ids.pop())
        return None

    # --- discovery -------------------------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        """The EHR's ``.well-known/smart-configuration``, read at most hourly."""
        with self._lock:
            if self._discovered and self._discovered[0] > time.monotonic():
                return self._discovered[1]
        url = f"{self.settings.fhir_base}/.well-known/smart-configuration"
        document = _json(self._send("GET", url), "the EHR's smart-configuration")
        with self._lock:
            self._discovered = (time.monotonic() + DISCOVERY_SECONDS, document)
        return document

    def _endpoint(self, configured: str | None, name: str) -> str:
        if configured:
            return configured
        value = self.configuration().get(name)
        if not isinstance(value, str) or not value:
            raise UpstreamUnavailable(f"the EHR's smart-configuration has no {name}; set it in [ehr]")
        return value

    def issuer(self) -> str:
        return self._endpoint(self.settings.issuer, "issuer")

    def smart_configuration(self, imaging_fhir: str, capabilities: list[str]) -> dict[str, Any]:
        """What this server publishes: the EHR's document, with this imaging FHIR base associated."""
        document = {k: v for k, v in self.configuration().items() if k != "associated_endpoints"}
        return {**document, "associated_endpoints": [{"url": imaging_fhir, "capabilities": capabilities}]}

    def oauth_uris(self) -> dict[str, str]:
        """The EHR's endpoints for the CapabilityStatement's ``oauth-uris`` extension."""
        document = self.configuration()
        names = {
            "authorize": "authorization_endpoint",
            "token": "token_endpoint",
            "introspect": "introspection_endpoint",
            "revoke": "revocation_endpoint",
            "register": "registration_endpoint",
        }
        return {k: document[v] for k, v in names.items() if isinstance(document.get(v), str)}

    # --- the EHR over HTTP -----------------------------------------------------------------------

    def _introspect(self, token: str) -> dict[str, Any]:
        url = self._endpoint(self.settings.introspection_endpoint, "introspection_endpoint")
        for attempt in (1, 2):
            response = self._send(
                "POST",
                url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": f"Bearer {self.backend_token(renew=attempt == 2)}"},
            )
            if response.status_code != 401:
                break
        if response.status_code in (401, 403):
            log.warning("the EHR refused this server's introspection: %s", response.text[:300])
            raise UpstreamUnavailable(
                f"the EHR refused this server's introspection request ({response.status_code}); "
                "check [ehr] client_id and its scopes at the EHR"
            )
        return _json(response, "the EHR's introspection answer")

    def _get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        response: httpx.Response | None = None
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {self.backend_token(renew=attempt == 2)}",
                "Accept": _FHIR_JSON,
            }
            response = self._send("GET", url, params=params, headers=headers)
            if response.status_code != 401:
                break
        assert response is not None
        if response.status_code in (401, 403):
            raise UpstreamUnavailable(
                f"the EHR refused this server's backend token for {url} ({response.status_code}); "
                f"it needs {self.settings.backend_scope} reaching the patient"
            )
        return response

    def backend_token(self, *, renew: bool = False) -> str:
        """This server's own access token at the EHR (SMART Backend Services), reused until near expiry."""
        with self._lock:
            if not renew and self._backend and self._backend[0] > time.time():
                return self._backend[1]
        url = self._endpoint(self.settings.token_endpoint, "token_endpoint")
        form = {
            "grant_type": "client_credentials",
            "scope": self.settings.backend_scope,
            "client_assertion_type": assertions.ASSERTION_TYPE,
            "client_assertion": self._assertion(url),
        }
        response = self._send("POST", url, data=form)
        body = _json(response, "the EHR's token response") if response.status_code == 200 else None
        if body is None or not isinstance(body.get("access_token"), str):
            log.warning(
                "the EHR refused this server's backend-services token request: %s", response.text[:300]
            )
            raise UpstreamUnavailable(
                f"the EHR refused this server's backend-services token ({response.status_code}): "
                f"{_error_text(response)}; check [ehr] client_id, key and backend_scope"
            )
        expires_in = body.get("expires_in")
        lifetime = expires_in if isinstance(expires_in, int) and expires_in > 0 else 300
        keep = max(lifetime - BACKEND_MARGIN, lifetime / 2)
        with self._lock:
            self._backend = (time.time() + keep, body["access_token"])
        return str(body["access_token"])

    def _assertion(self, audience: str) -> str:
        """RFC 7523 §3 / SMART Backend Services: iss = sub = client_id, aud = token endpoint, ≤ 5 min."""
        now = int(time.time())
        claims = {
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": self._alg, "typ": "JWT", "kid": str(self._key.kid)}
        return jwt.encode(header, claims, self._key, algorithms=[self._alg])

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("the EHR at %s is unreachable: %s", url, exc)
            raise UpstreamUnavailable(
                f"the EHR cannot be reached ({type(exc).__name__}); try again shortly",
                retry_after=self.settings.retry_after,
            ) from exc

    def close(self) -> None:
        self._http.close()


def lenient_scopes(text: str) -> Scopes:
    """The EHR's scopes, keeping those this server understands (others grant nothing here)."""
    clinical: list[ClinicalScope] = []
    names: list[str] = []
    for item in dict.fromkeys(text.split()):
        try:
            parsed = parse_one(item)
        except OAuthError:
            continue
        (names if isinstance(parsed, str) else clinical).append(parsed)  # type: ignore[arg-type]
    return Scopes(tuple(clinical), tuple(names))


def mrn_identifier(patient: dict[str, Any], rule: str) -> tuple[str, str] | None:
    """(value, system or assigning authority) of the identifier ``rule`` picks (config.MRN_RULE)."""
    match = MRN_RULE.match(rule)
    if match is None:
        raise ValueError(f"unsupported MRN rule {rule!r}")
    candidates = [i for i in patient.get("identifier", []) if isinstance(i, dict) and i.get("value")]
    path, wanted = match["path"], match["value"]
    for identifier in candidates:
        if path is None or _picks(identifier, path, wanted):
            return str(identifier["value"]), _authority(identifier)
    return None


def _picks(identifier: dict[str, Any], path: str, wanted: str) -> bool:
    if path == "system":
        return bool(identifier.get("system") == wanted)
    kind: dict[str, Any] = identifier["type"] if isinstance(identifier.get("type"), dict) else {}
    if path == "type.text":
        return bool(kind.get("text") == wanted)
    return any(isinstance(c, dict) and c.get("code") == wanted for c in kind.get("coding", []))


def _authority(identifier: dict[str, Any]) -> str:
    """The identifier's system, else its assigner's identifier or name (the assigning authority)."""
    if isinstance(identifier.get("system"), str):
        return str(identifier["system"])
    assigner: dict[str, Any] = identifier["assigner"] if isinstance(identifier.get("assigner"), dict) else {}
    ident: dict[str, Any] = assigner["identifier"] if isinstance(assigner.get("identifier"), dict) else {}
    return str(ident.get("value") or assigner.get("display") or "")


def load_private_key(settings: EhrSettings) -> tuple[RSAKey | ECKey, str]:
    """This server's signing key from a JWK (JSON) or PEM file, and the algorithm it signs with."""
    path = settings.private_key_file
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageBridgeError(f"cannot read [ehr] private_key_file {path}: {exc.strerror}") from exc
    try:
        if raw.lstrip().startswith(b"{"):
            data = json.loads(raw)
            key: RSAKey | ECKey = (ECKey if data.get("kty") == "EC" else RSAKey).import_key(data)
        else:
            key = _pem_key(raw)
    except (JoseError, ValueError, TypeError) as exc:
        raise ImageBridgeError(f"[ehr] private_key_file {path} is not an RSA or EC private key") from exc
    if not key.is_private:
        raise ImageBridgeError(f"[ehr] private_key_file {path} holds a public key; the private one is needed")
    if key.kid is None:
        key.ensure_kid()
    alg = settings.signing_alg or ("ES384" if isinstance(key, ECKey) else "RS384")
    return key, alg


def _pem_key(raw: bytes) -> RSAKey | ECKey:
    try:
        return RSAKey.import_key(raw)
    except (JoseError, ValueError, TypeError):
        return ECKey.import_key(raw)


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 500:
        raise UpstreamUnavailable(f"the EHR failed to answer with {what} ({response.status_code})")
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamUnavailable(f"the EHR's answer for {what} is not JSON") from exc
    if not isinstance(body, dict) or response.status_code >= 400:
        raise UpstreamUnavailable(
            f"the EHR answered {response.status_code} for {what}: {_error_text(response)}"
        )
    return body


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error_description") or body.get("error") or body)[:200]
    return str(body)[:200]
