"""Token introspection (RFC 7662) with the SMART fields (SMART App Launch 2.2 "Token Introspection").

An active token answers with ``active``, ``scope``, ``client_id``, ``exp``, ``iat``,
``token_type``, the launch context (``patient``) and, when an ``id_token`` was issued, ``iss``,
``sub`` and ``fhirUser``. Anything else (unknown, expired, revoked, a code or a refresh token
presented as an access token) answers exactly ``{"active": false}`` (RFC 7662 §2.2).

Only access tokens are described: a resource server introspects what a client presented as a
bearer token, and a refresh token must never pass for one.
"""

from __future__ import annotations

from typing import Any

from imagebridge.auth.scopes import parse
from imagebridge.auth.tokens import TokenRecord

INACTIVE: dict[str, Any] = {"active": False}


def response(record: TokenRecord | None, issuer: str, fhir_base: str) -> dict[str, Any]:
    if record is None or record.kind != "access" or not record.active():
        return dict(INACTIVE)
    grant = record.grant
    body: dict[str, Any] = {
        "active": True,
        "scope": grant.scope,
        "client_id": grant.client_id,
        "exp": int(record.expires_at.timestamp()),
        "iat": int(record.issued_at.timestamp()),
        "token_type": "Bearer",
    }
    if grant.patient:
        body["patient"] = grant.patient
    scopes = parse(grant.scope)
    if scopes.has("openid") and grant.subject:
        body["iss"] = issuer
        body["sub"] = grant.subject
        if scopes.has("fhirUser") and grant.fhir_user:
            body["fhirUser"] = f"{fhir_base}/{grant.fhir_user}"
    return body
