"""Registered clients: SMART apps (public, or confidential with an asymmetric key) and backend services.

A client carries the scopes it may ask for and, for ``system/`` scopes, the access the
organisation pre-authorized (SMART Imaging Access: "system/ tokens follow the client's
pre-authorized policy"; the scope alone grants nothing).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from imagebridge.auth.tokens import access_changed
from imagebridge.errors import Conflict, NotFound
from imagebridge.index.schema import auth_clients

ALL = "*"


class ClientKind(enum.StrEnum):
    PUBLIC = "public"
    CONFIDENTIAL_ASYMMETRIC = "confidential-asymmetric"


@dataclass(frozen=True)
class AccessGrant:
    """What ``system/`` scopes may reach: patients and studies, each a list or ``*`` (everything)."""

    patients: tuple[str, ...] | str = ()
    studies: tuple[str, ...] | str = ALL

    def allows_patient(self, patient: str) -> bool:
        return self.patients == ALL or patient in self.patients

    def allows_study(self, study_uid: str) -> bool:
        return self.studies == ALL or study_uid in self.studies

    def to_json(self) -> dict[str, Any]:
        return {
            "patients": self.patients if self.patients == ALL else list(self.patients),
            "studies": self.studies if self.studies == ALL else list(self.studies),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccessGrant:
        def read(value: Any) -> tuple[str, ...] | str:
            return ALL if value == ALL else tuple(value or ())

        return cls(read(data.get("patients")), read(data.get("studies", ALL)))


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    kind: ClientKind
    redirect_uris: tuple[str, ...] = ()
    jwks: dict[str, Any] | None = None
    scope: str = ""
    """Scopes this client may be granted; empty means any patient/user/OpenID scope, no system scope."""
    policy: AccessGrant = field(default_factory=AccessGrant)
    launch_url: str = ""
    """Where an EHR sends the browser to launch this app (SMART App Launch §2.0.1, ``iss`` and ``launch``)."""
    pre_approved: bool = False
    """The organisation approved this app for its clinicians: an EHR launch skips the consent page."""

    @property
    def confidential(self) -> bool:
        return self.kind is ClientKind.CONFIDENTIAL_ASYMMETRIC


class Clients:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, client: Client) -> Client:
        row = {
            "client_id": client.client_id,
            "name": client.name,
            "kind": client.kind.value,
            "redirect_uris": json.dumps(list(client.redirect_uris)),
            "jwks": json.dumps(client.jwks) if client.jwks else "",
            "scope": client.scope,
            "policy": json.dumps(client.policy.to_json()),
            "created_at": datetime.now(UTC),
            "launch_url": client.launch_url,
            "pre_approved": client.pre_approved,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(auth_clients).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a client '{client.client_id}' exists already; remove it first") from exc
        return client

    def get(self, client_id: str) -> Client | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(auth_clients).where(auth_clients.c.client_id == client_id)).first()
        return _client(row) if row else None

    def all(self) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(auth_clients).order_by(auth_clients.c.client_id)).all()
        return [_client(r) for r in rows]

    def approve(self, client_id: str, approved: bool = True) -> None:
        """Record (or withdraw) the organisation's pre-approval of an app for EHR launches."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(auth_clients)
                .where(auth_clients.c.client_id == client_id)
                .values(pre_approved=approved)
            ).rowcount
        access_changed()
        if not changed:
            raise NotFound(f"no client '{client_id}'")

    def remove(self, client_id: str) -> None:
        with self.engine.begin() as conn:
            removed = conn.execute(delete(auth_clients).where(auth_clients.c.client_id == client_id)).rowcount
        access_changed()
        if not removed:
            raise NotFound(f"no client '{client_id}'")


def _client(row: Any) -> Client:
    return Client(
        client_id=row.client_id,
        name=row.name,
        kind=ClientKind(row.kind),
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        jwks=json.loads(row.jwks) if row.jwks else None,
        scope=row.scope,
        policy=AccessGrant.from_json(json.loads(row.policy)),
        launch_url=row.launch_url,
        pre_approved=bool(row.pre_approved),
    )
