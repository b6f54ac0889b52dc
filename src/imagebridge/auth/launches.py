"""EHR launch contexts (SMART App Launch 2.2 §2.0.1 "EHR launch", the ``launch`` parameter).

A clinician signed in at the EHR opens an app for a patient; the EHR records *who* launched
*which* app for *which* patient (and encounter) and hands the app an opaque ``launch`` value.
The app sends it back on ``/authorize``, which binds the context to the authorization. A launch
value is random (256 bits), stored only as its SHA-256, lives a few minutes and is used once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import Engine, delete, insert, select, update

from imagebridge.auth.tokens import aware, digest
from imagebridge.index.schema import ehr_launches

LAUNCH_LIFETIME = 300


@dataclass(frozen=True)
class LaunchContext:
    client_id: str
    username: str
    patient: str
    encounter: str | None
    expires_at: datetime
    used: bool

    def usable(self, now: datetime | None = None) -> bool:
        return not self.used and (now or datetime.now(UTC)) < self.expires_at


class Launches:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        client_id: str,
        username: str,
        patient: str,
        encounter: str | None = None,
        lifetime: int = LAUNCH_LIFETIME,
    ) -> str:
        """Record a launch context and return the opaque ``launch`` value for the app's launch URL."""
        launch = secrets.token_urlsafe(32)
        now = datetime.now(UTC).replace(microsecond=0)
        row = {
            "launch_hash": digest(launch),
            "client_id": client_id,
            "username": username,
            "patient": patient,
            "encounter": encounter,
            "created_at": now,
            "expires_at": now + timedelta(seconds=lifetime),
            "used_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(delete(ehr_launches).where(ehr_launches.c.expires_at < now - timedelta(days=1)))
            conn.execute(insert(ehr_launches).values(**row))
        return launch

    def find(self, launch: str) -> LaunchContext | None:
        """The context of ``launch`` whatever its state; None if it was never issued."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(ehr_launches).where(ehr_launches.c.launch_hash == digest(launch))
            ).first()
        if row is None:
            return None
        return LaunchContext(
            row.client_id,
            row.username,
            row.patient,
            row.encounter,
            aware(row.expires_at),
            row.used_at is not None,
        )

    def use(self, launch: str) -> bool:
        """Mark ``launch`` used; False if it was used already or has expired (the check and the mark are one)."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(ehr_launches)
                .where(
                    ehr_launches.c.launch_hash == digest(launch),
                    ehr_launches.c.used_at.is_(None),
                    ehr_launches.c.expires_at > now,
                )
                .values(used_at=now)
            ).rowcount
        return bool(changed)


def launch_url(app_launch_url: str, iss: str, launch: str) -> str:
    """The URL the EHR opens to launch an app: its launch URL with ``iss`` (our FHIR base) and ``launch``."""
    joiner = "&" if "?" in app_launch_url else "?"
    return f"{app_launch_url}{joiner}{urlencode({'iss': iss, 'launch': launch})}"
