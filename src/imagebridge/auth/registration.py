"""OAuth 2.0 Dynamic Client Registration (RFC 7591) for SMART apps.

Public clients (``token_endpoint_auth_method: none``, authorization code + PKCE) and confidential
asymmetric clients (``private_key_jwt`` with an inline ``jwks``) may register. Symmetric secrets
are not offered (SMART favours asymmetric keys), and neither is ``jwks_uri``: this server fetches
nothing from addresses a registrant names. A dynamically registered client gets no
``system/`` access: the organisation's pre-authorized policy is set by an administrator.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from imagebridge.auth.clients import Client, ClientKind
from imagebridge.auth.errors import OAuthError
from imagebridge.auth.scopes import parse
from imagebridge.identifiers import public_id


class InvalidRedirectUri(OAuthError):
    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    error = "invalid_client_metadata"


def client_from_metadata(metadata: dict[str, Any]) -> Client:
    """RFC 7591 §2: validate the metadata and make a client with a fresh id (§3.2.1)."""
    method = metadata.get("token_endpoint_auth_method", "none")
    if method not in ("none", "private_key_jwt"):
        raise InvalidClientMetadata("token_endpoint_auth_method must be 'none' or 'private_key_jwt'")
    uris = _redirect_uris(metadata.get("redirect_uris"), required=method == "none")
    jwks = metadata.get("jwks")
    if method == "private_key_jwt":
        if "jwks_uri" in metadata and not jwks:
            raise InvalidClientMetadata("jwks_uri is not supported; send the public keys inline as jwks")
        _check_jwks(jwks)
    scope = metadata.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidClientMetadata("scope is a space-separated string")
    scopes = parse(scope)
    if "system" in scopes.levels():
        raise InvalidClientMetadata("system/ scopes are granted by an administrator, not by registration")
    name = metadata.get("client_name") or "unnamed app"
    kind = ClientKind.CONFIDENTIAL_ASYMMETRIC if method == "private_key_jwt" else ClientKind.PUBLIC
    return Client(
        client_id=public_id(16),
        name=str(name)[:200],
        kind=kind,
        redirect_uris=tuple(uris),
        jwks=_public_only(jwks) if jwks else None,
        scope=scopes.text,
    )


def response(client: Client) -> dict[str, Any]:
    """RFC 7591 §3.2.1: the client information response."""
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(time.time()),
        "client_name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "token_endpoint_auth_method": "private_key_jwt" if client.confidential else "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    if client.scope:
        body["scope"] = client.scope
    if client.jwks:
        body["jwks"] = client.jwks
    return body


def _redirect_uris(value: Any, *, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(u, str) for u in value):
        raise InvalidRedirectUri("redirect_uris must be a non-empty list of URLs")
    for uri in value:
        parts = urlsplit(uri)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if (
            parts.fragment
            or not parts.netloc
            or not (parts.scheme == "https" or (parts.scheme == "http" and local))
        ):
            raise InvalidRedirectUri(
                f"'{uri}' is not an https URL (http only for loopback), or has a fragment"
            )
    return list(value)


def _check_jwks(jwks: Any) -> None:
    try:
        keys = KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidClientMetadata("jwks is not a JWK Set of RSA or EC public keys") from exc
    if not keys.keys or any(k.key_type not in ("RSA", "EC") for k in keys.keys):
        raise InvalidClientMetadata("jwks must hold RSA or EC public keys")


def _public_only(jwks: dict[str, Any]) -> dict[str, Any]:
    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    return {"keys": [{**k.as_dict(private=False), **({"kid": k.kid} if k.kid else {})} for k in keys.keys]}
