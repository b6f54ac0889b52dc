"""Token revocation (RFC 7009): a client withdraws a token it holds; always 200 for a well-formed request."""

from __future__ import annotations

from imagebridge.auth.clients import Client
from imagebridge.auth.tokens import Tokens


def revoke(tokens: Tokens, token: str, client: Client) -> None:
    """RFC 7009 §2.1: revoke ``token`` if it was issued to ``client``; an unknown token is not an error (§2.2)."""
    record = tokens.find(token)
    if record is None or record.grant.client_id != client.client_id:
        return
    tokens.revoke(token)
