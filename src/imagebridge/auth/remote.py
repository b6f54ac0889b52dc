"""Integrated mode: an outside EHR is the token authority (SMART Imaging Access §"Authorization").

:class:`EhrAuthority` implements ``auth.authority.TokenAuthority``. For each bearer token it

1. asks the EHR's introspection endpoint (RFC 7662 §2, SMART App Launch 2.2 "Token
   Introspection"), authenticating with this server's own SMART Backend Services token
   (``auth.ehr_client``: ``client_credentials`` + ``private_key_jwt``, RFC 7523 §2.2, kept until
   shortly before it expires);
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
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.ehr_client import EhrClient, answer
from imagebridge.auth.errors import AccessDenied, InvalidToken, OAuthError
from imagebridge.auth.policy import Principal
from imagebridge.auth.scopes import ClinicalScope, Scopes, parse_one
from imagebridge.config import MRN_RULE, EhrSettings

PatientKey = Callable[[str, str], str]
"""(PatientID, IssuerOfPatientID) -> the archive's patient key (the ``/fhir`` Patient id)."""
IssuerOf = Callable[[str], str]
"""An identifier system -> the Issuer of Patient ID it stands for (``fhir.identifiers.issuer_of``)."""
SystemOf = Callable[[str], str]
"""An Issuer of Patient ID -> its identifier system (``fhir.identifiers.system_of``)."""
ClientPolicy = Callable[[str], AccessGrant]
"""A client_id -> the access its system/ scopes were pre-authorized for here (empty if unknown)."""

_MAX_ENTRIES = 10_000


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


INACTIVE = "the access token is unknown, expired or revoked at the EHR"


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
        self.ehr = EhrClient(settings, transport)
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
                raise InvalidToken(INACTIVE)
            return cached[1]
        own = self.ehr.current_backend_token
        if own is not None and key == digest(own):
            raise InvalidToken("this server's own backend-services token is not a caller's token")
        body = self.ehr.introspect(token)
        if body.get("active") is not True:
            self._tokens.put(key, None, self.settings.negative_cache_seconds)
            raise InvalidToken(INACTIVE)
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
        response = self.ehr.get(f"{self.settings.fhir_base}/Patient/{ehr_id}")
        if response.status_code in (404, 410):
            raise AccessDenied(f"the EHR has no Patient/{ehr_id}")
        resource = answer(response, f"Patient/{ehr_id}")
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
            response = self.ehr.get(
                f"{self.settings.fhir_base}/Patient", params={"identifier": f"{system}|{patient_id}"}
            )
            if response.status_code != 200:
                continue
            bundle = answer(response, "a Patient search")
            ids = {
                e["resource"]["id"]
                for e in bundle.get("entry", [])
                if isinstance(e, dict) and isinstance(e.get("resource"), dict) and "id" in e["resource"]
            }
            if len(ids) == 1:
                return str(ids.pop())
        return None

    # --- discovery -------------------------------------------------------------------------------

    def issuer(self) -> str:
        return self.ehr.issuer()

    def smart_configuration(self, imaging_fhir: str, capabilities: list[str]) -> dict[str, Any]:
        """What this server publishes: the EHR's document, with this imaging FHIR base associated."""
        document = {k: v for k, v in self.ehr.configuration().items() if k != "associated_endpoints"}
        return {**document, "associated_endpoints": [{"url": imaging_fhir, "capabilities": capabilities}]}

    def oauth_uris(self) -> dict[str, str]:
        """The EHR's endpoints for the CapabilityStatement's ``oauth-uris`` extension."""
        document = self.ehr.configuration()
        names = {
            "authorize": "authorization_endpoint",
            "token": "token_endpoint",
            "introspect": "introspection_endpoint",
            "revoke": "revocation_endpoint",
            "register": "registration_endpoint",
        }
        return {k: document[v] for k, v in names.items() if isinstance(document.get(v), str)}

    # --- the EHR over HTTP -----------------------------------------------------------------------


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
