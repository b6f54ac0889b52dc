"""Client authentication with ``private_key_jwt`` (RFC 7523 §2.2; SMART client-confidential-asymmetric).

The assertion is a JWT signed with RS384 or ES384 by a key in the client's registered JWK Set,
with ``iss`` = ``sub`` = client_id, ``aud`` = the endpoint it is sent to, ``exp`` at most five
minutes ahead, and a ``jti`` never seen before from this client.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from imagebridge.auth.clients import Client
from imagebridge.auth.errors import InvalidClient
from imagebridge.index.schema import auth_assertion_jtis

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_LIFETIME = 300
SKEW = 30


class JtiLedger:
    """Assertion ids already used, kept until they could no longer be valid."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def use(self, client_id: str, jti: str, expires_at: datetime) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(auth_assertion_jtis).where(auth_assertion_jtis.c.expires_at < _now()))
                conn.execute(
                    insert(auth_assertion_jtis).values(client_id=client_id, jti=jti, expires_at=expires_at)
                )
        except IntegrityError as exc:
            raise InvalidClient("the client assertion's jti was used before (replay refused)") from exc


def _now() -> datetime:
    return datetime.now(UTC)


def verify(assertion: str, client: Client, audiences: Collection[str], ledger: JtiLedger) -> dict[str, Any]:
    """The assertion's claims if it authenticates ``client`` at one of ``audiences``; else InvalidClient."""
    if not client.confidential or not client.jwks:
        raise InvalidClient(f"client '{client.client_id}' has no registered keys")
    claims = _decode(assertion, client)
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise InvalidClient("the client assertion's iss and sub must both be the client_id")
    aud = claims.get("aud")
    if not any(a in audiences for a in (aud if isinstance(aud, list) else [aud])):
        raise InvalidClient(f"the client assertion's aud must be {sorted(audiences)[0]}")
    exp = claims.get("exp")
    now = time.time()
    if not isinstance(exp, int | float) or exp <= now - SKEW:
        raise InvalidClient("the client assertion has expired or has no exp")
    if exp > now + MAX_LIFETIME + SKEW:
        raise InvalidClient("the client assertion's exp is more than five minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise InvalidClient("the client assertion needs a unique jti")
    ledger.use(client.client_id, jti, _now() + timedelta(seconds=MAX_LIFETIME + 2 * SKEW))
    return claims


def _decode(assertion: str, client: Client) -> dict[str, Any]:
    try:
        keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        token = jwt.decode(assertion, keys, algorithms=list(ALGORITHMS))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidClient(f"the client assertion could not be verified: {_reason(exc)}") from exc
    if token.header.get("alg") not in ALGORITHMS:
        raise InvalidClient("client assertions are signed with RS384 or ES384")
    return dict(token.claims)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
