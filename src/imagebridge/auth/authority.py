"""The seam between "a bearer token arrived" and "this is who is asking".

In standalone mode the local authorization server (``auth.server.AuthorizationServer``) is the
authority; in integrated mode an outside EHR is, reached by token introspection. Every surface
(FHIR, DICOMweb, the portal) resolves tokens through ``app.state.authority`` and nothing else.
"""

from __future__ import annotations

from typing import Protocol

from imagebridge.auth.errors import InvalidToken
from imagebridge.auth.policy import Principal


class TokenAuthority(Protocol):
    def principal(self, token: str) -> Principal:
        """The principal behind an active access token; raises ``auth.errors.InvalidToken`` otherwise."""
        ...


def bearer_token(header: str | None) -> str:
    """RFC 6750 §2.1: the token of an ``Authorization: Bearer <token>`` header value."""
    if header is None:
        raise InvalidToken("no access token; send Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header is not 'Bearer <token>'")
    return token.strip()
