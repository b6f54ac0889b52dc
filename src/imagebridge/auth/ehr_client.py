"""This imaging server as a client of the EHR: discovery, its own backend-services token, and calls.

SMART Backend Services (SMART App Launch 2.2): ``client_credentials`` with a ``private_key_jwt``
assertion (RFC 7523 §2.2, RS384 or ES384, signed with joserfc). Every failure to get a usable
answer from the EHR is :class:`~imagebridge.errors.UpstreamUnavailable` (HTTP 503): connection
errors and timeouts, 5xx, answers that are not JSON objects, and refusals of this server's own
credentials (a configuration problem the log explains). An EHR that refuses this server one
particular Patient (403) makes that request 403: access cannot be established.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import httpx
from joserfc import jwt

from imagebridge.auth import assertions
from imagebridge.auth.errors import AccessDenied
from imagebridge.config import EhrSettings
from imagebridge.errors import UpstreamUnavailable

log = logging.getLogger(__name__)

BACKEND_MARGIN = 30
"""Seconds before its expiry that the backend token is replaced."""
DISCOVERY_SECONDS = 3600
_FHIR_JSON = "application/fhir+json"


class EhrClient:
    def __init__(self, settings: EhrSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._http = httpx.Client(timeout=settings.timeout, transport=transport, follow_redirects=False)
        self._key, self._alg = settings.signing_key()
        self._lock = threading.Lock()
        self._discovered: tuple[float, dict[str, Any]] | None = None
        self._backend: tuple[float, str] | None = None

    @property
    def current_backend_token(self) -> str | None:
        backend = self._backend
        return backend[1] if backend else None

    def configuration(self) -> dict[str, Any]:
        """The EHR's ``.well-known/smart-configuration``, read at most hourly."""
        with self._lock:
            if self._discovered and self._discovered[0] > time.monotonic():
                return self._discovered[1]
        url = f"{self.settings.fhir_base}/.well-known/smart-configuration"
        document = answer(self._send("GET", url), "the EHR's smart-configuration")
        with self._lock:
            self._discovered = (time.monotonic() + DISCOVERY_SECONDS, document)
        return document

    def endpoint(self, configured: str | None, name: str) -> str:
        if configured:
            return configured
        value = self.configuration().get(name)
        if not isinstance(value, str) or not value:
            raise UpstreamUnavailable(f"the EHR's smart-configuration has no {name}; set it in [ehr]")
        return value

    def issuer(self) -> str:
        return self.endpoint(self.settings.issuer, "issuer")

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.1, authenticated with this server's backend token (renewed once on a 401)."""
        url = self.endpoint(self.settings.introspection_endpoint, "introspection_endpoint")
        form = {"token": token, "token_type_hint": "access_token"}
        response = self._authorized("POST", url, data=form)
        if response.status_code in (401, 403):
            log.warning("the EHR refused this server's introspection: %s", response.text[:300])
            raise UpstreamUnavailable(
                f"the EHR refused this server's introspection request ({response.status_code}); "
                "check [ehr] client_id and its scopes at the EHR"
            )
        return answer(response, "the EHR's introspection answer")

    def get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        """A FHIR read or search at the EHR with this server's backend token (renewed once on a 401)."""
        response = self._authorized("GET", url, params=params, headers={"Accept": _FHIR_JSON})
        if response.status_code == 401:
            log.warning("the EHR refused this server's backend token for %s: %s", url, response.text[:300])
            raise UpstreamUnavailable(f"the EHR refused this server's backend token for {url} (401)")
        if response.status_code == 403:
            log.warning("the EHR does not let this server read %s: %s", url, response.text[:300])
            raise AccessDenied(
                f"the EHR does not let this imaging server read {url}, so access cannot be established"
            )
        return response

    def _authorized(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request with this server's backend token; a 401 renews the token and retries once."""
        headers = kwargs.pop("headers", {})
        for renew in (False, True):
            bearer = {"Authorization": f"Bearer {self.backend_token(renew=renew)}"}
            response = self._send(method, url, headers={**headers, **bearer}, **kwargs)
            if response.status_code != 401:
                break
        return response

    def backend_token(self, *, renew: bool = False) -> str:
        """This server's own access token at the EHR (SMART Backend Services), reused until near expiry."""
        with self._lock:
            if not renew and self._backend and self._backend[0] > time.time():
                return self._backend[1]
        url = self.endpoint(self.settings.token_endpoint, "token_endpoint")
        form = {
            "grant_type": "client_credentials",
            "scope": self.settings.backend_scope,
            "client_assertion_type": assertions.ASSERTION_TYPE,
            "client_assertion": self._assertion(url),
        }
        response = self._send("POST", url, data=form)
        body = answer(response, "the EHR's token response") if response.status_code == 200 else None
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


def answer(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object the EHR answered, or UpstreamUnavailable saying what went wrong."""
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
