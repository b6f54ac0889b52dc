"""Authorization codes, access tokens and refresh tokens.

Tokens are opaque random strings (256 bits); only their SHA-256 digest is stored, so a copy of
the database does not hand out working tokens. Every token belongs to a *grant* (one
authorization); revoking a refresh token, or replaying a code, revokes the whole grant
(RFC 6749 §4.1.2, §10.5; RFC 7009 §2.1).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, Insert, delete, insert, select, update

from imagebridge.index.schema import auth_tokens

Kind = Literal["code", "access", "refresh"]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Grant:
    """What one authorization decided: who, which client, which scopes, in which patient context."""

    client_id: str
    scope: str
    patient: str | None = None
    fhir_user: str | None = None
    subject: str | None = None
    grant_id: str = field(default_factory=lambda: secrets.token_hex(16))
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRecord:
    kind: Kind
    grant: Grant
    issued_at: datetime
    expires_at: datetime
    revoked: bool

    def active(self, now: datetime | None = None) -> bool:
        return not self.revoked and (now or datetime.now(UTC)) < self.expires_at


_revocations = 0
"""How many revocation writes this process has made (any Tokens object): a resolved token that
was cached before the count moved is resolved again."""


def revocations() -> int:
    return _revocations


def access_changed() -> None:
    """Something a resolved token depends on changed (a revocation, a client removed)."""
    global _revocations
    _revocations += 1


class Tokens:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    def issue(self, kind: Kind, grant: Grant, lifetime: int) -> tuple[str, TokenRecord]:
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC).replace(microsecond=0)
        record = TokenRecord(kind, grant, now, now + timedelta(seconds=lifetime), False)
        row = {
            "token_hash": digest(token),
            "kind": kind,
            "grant_id": grant.grant_id,
            "client_id": grant.client_id,
            "scope": grant.scope,
            "patient": grant.patient,
            "fhir_user": grant.fhir_user,
            "subject": grant.subject,
            "data": json.dumps(grant.data),
            "issued_at": record.issued_at,
            "expires_at": record.expires_at,
            "revoked": False,
        }
        self._write(insert(auth_tokens).values(**row))
        return token, record

    def find(self, token: str) -> TokenRecord | None:
        """The record of ``token``, active or not; None if we never issued it."""
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_tokens).where(auth_tokens.c.token_hash == digest(token))).first()
        return _record(row) if row else None

    def redeem_code(self, code: str) -> TokenRecord | None:
        """Use an authorization code once. A second use revokes everything issued from it."""
        record = self.find(code)
        if record is None or record.kind != "code":
            return None
        used = self._write(
            update(auth_tokens)
            .where(auth_tokens.c.token_hash == digest(code), auth_tokens.c.revoked.is_(False))
            .values(revoked=True)
        )
        if not used:
            self.revoke_grant(record.grant.grant_id)
            return None
        return record

    def revoke(self, token: str) -> TokenRecord | None:
        """Revoke ``token``; a refresh token takes its whole grant with it (RFC 7009 §2.1)."""
        record = self.find(token)
        if record is None:
            return None
        if record.kind == "refresh":
            self.revoke_grant(record.grant.grant_id)
        else:
            self._write(
                update(auth_tokens).where(auth_tokens.c.token_hash == digest(token)).values(revoked=True)
            )
        return record

    def revoke_grant(self, grant_id: str) -> None:
        self._write(update(auth_tokens).where(auth_tokens.c.grant_id == grant_id).values(revoked=True))

    def purge_expired(self, before: datetime | None = None) -> int:
        cutoff = before or datetime.now(UTC) - timedelta(days=1)
        return self._write(delete(auth_tokens).where(auth_tokens.c.expires_at < cutoff))

    def _write(self, statement: Any) -> int:
        if self._lock is None:
            with self.engine.begin() as conn:
                count = int(conn.execute(statement).rowcount or 0)
        else:
            with self._lock, self.engine.begin() as conn:
                count = int(conn.execute(statement).rowcount or 0)
        if not isinstance(statement, Insert):
            access_changed()
        return count


def _record(row: Any) -> TokenRecord:
    grant = Grant(
        client_id=row.client_id,
        scope=row.scope,
        patient=row.patient,
        fhir_user=row.fhir_user,
        subject=row.subject,
        grant_id=row.grant_id,
        data=json.loads(row.data),
    )
    return TokenRecord(row.kind, grant, aware(row.issued_at), aware(row.expires_at), bool(row.revoked))
