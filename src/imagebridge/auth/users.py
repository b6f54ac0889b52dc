"""People who sign in: patients, proxies (a parent, say), clinicians and administrators.

Passwords are stored as argon2id hashes (RFC 9106) and never leave this module.
"""

from __future__ import annotations

import enum
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from imagebridge.errors import Conflict, InvalidInput, NotFound
from imagebridge.index.schema import auth_users


class Role(enum.StrEnum):
    PATIENT = "patient"
    PROXY = "proxy"
    CLINICIAN = "clinician"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    display_name: str
    patients: tuple[str, ...]
    """FHIR Patient ids this user may act for; for clinicians, an empty tuple means every patient."""

    @property
    def fhir_user(self) -> str:
        """The resource this user is, relative to the FHIR base (SMART ``fhirUser``)."""
        if self.role is Role.PATIENT and self.patients:
            return f"Patient/{self.patients[0]}"
        if self.role is Role.PROXY:
            return f"RelatedPerson/{self.username}"
        return f"Practitioner/{self.username}"


_hasher = PasswordHasher()
_DUMMY = _hasher.hash("an unused password that keeps timing even")


class Users:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(
        self,
        username: str,
        password: str,
        role: Role,
        *,
        display_name: str = "",
        patients: tuple[str, ...] = (),
    ) -> User:
        if len(password) < 8:
            raise InvalidInput("a password has at least 8 characters")
        if role in (Role.PATIENT, Role.PROXY) and not patients:
            raise InvalidInput(f"a {role.value} user needs at least one patient (--patient)")
        if role is Role.PATIENT and len(patients) != 1:
            raise InvalidInput("a patient user is exactly one patient; use role 'proxy' for several")
        row = {
            "username": username,
            "password_hash": _hasher.hash(password),
            "role": role.value,
            "display_name": display_name or username,
            "patients": json.dumps(list(patients)),
            "created_at": datetime.now(UTC),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(auth_users).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a user named '{username}' exists already") from exc
        return User(username, role, display_name or username, patients)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password is theirs; the same work is done for unknown names."""
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_users).where(auth_users.c.username == username)).first()
        try:
            _hasher.verify(row.password_hash if row else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            return None
        return _user(row) if row else None

    def set_password(self, username: str, password: str) -> None:
        """Replace a user's password (argon2id again; the old hash is gone)."""
        if len(password) < 8:
            raise InvalidInput("a password has at least 8 characters")
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(auth_users)
                .where(auth_users.c.username == username)
                .values(password_hash=_hasher.hash(password))
            ).rowcount
        if not changed:
            raise NotFound(f"no user named '{username}'")

    def get(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_users).where(auth_users.c.username == username)).first()
        return _user(row) if row else None

    def all(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(auth_users).order_by(auth_users.c.username)).all()
        return [_user(r) for r in rows]


def _user(row: object) -> User:
    return User(
        username=row.username,  # type: ignore[attr-defined]
        role=Role(row.role),  # type: ignore[attr-defined]
        display_name=row.display_name,  # type: ignore[attr-defined]
        patients=tuple(json.loads(row.patients)),  # type: ignore[attr-defined]
    )


MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60


class SignInThrottle:
    """At most :data:`MAX_FAILURES` wrong passwords per user name in :data:`LOCK_SECONDS`, counted
    across every sign-in page (the authorization server's and the portal's): one per process."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def locked(self, username: str) -> bool:
        recent = self._failures.get(username.lower())
        if recent is None:
            return False
        while recent and recent[0] < time.monotonic() - LOCK_SECONDS:
            recent.popleft()
        if not recent:
            del self._failures[username.lower()]
        return len(recent) >= MAX_FAILURES

    def failed(self, username: str) -> None:
        self._failures[username.lower()].append(time.monotonic())

    def succeeded(self, username: str) -> None:
        self._failures.pop(username.lower(), None)
