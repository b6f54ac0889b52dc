"""The values of patient-controlled sharing: shares, their states, codes, limits and errors.

See :mod:`imagebridge.services.sharing` for the service that creates and redeems them.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imagebridge.auth.tokens import aware
from imagebridge.errors import ImageBridgeError, InvalidInput

DEFAULT_EXPIRY = timedelta(days=30)
MAX_EXPIRY = timedelta(days=365)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


class ShareState(enum.StrEnum):
    ACTIVE = "active"
    LOCKED = "locked"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Share:
    """A share as stored (never its code)."""

    share_id: str
    patient: str
    """The FHIR Patient id (``fhir_patient_ids.fhir_id``) whose studies are shared."""
    studies: tuple[str, ...]
    created_by: str
    recipient: str | None
    allow_download: bool
    created_at: datetime
    expires_at: datetime
    failed_attempts: int = 0
    locked_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def link(self) -> str:
        """The path of the recipient's page (prefix it with the server's public base URL)."""
        return f"/s/{self.share_id}"

    def state(self, now: datetime | None = None) -> ShareState:
        if self.revoked_at is not None:
            return ShareState.REVOKED
        if (now or datetime.now(UTC)) >= self.expires_at:
            return ShareState.EXPIRED
        if self.locked_at is not None:
            return ShareState.LOCKED
        return ShareState.ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.share_id,
            "link": self.link,
            "patient": self.patient,
            "studies": list(self.studies),
            "recipient": self.recipient,
            "allow_download": self.allow_download,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "state": self.state().value,
            "failed_attempts": self.failed_attempts,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class CreatedShare:
    """A new share with its access code: the only time the code is known in clear."""

    share: Share
    code: str

    @property
    def link(self) -> str:
        return self.share.link


@dataclass(frozen=True)
class ShareSession:
    """What a successful redemption gives the recipient: a bearer token for the shared studies."""

    access_token: str
    expires_at: datetime
    share: Share


@dataclass(frozen=True)
class RedemptionLimits:
    max_failures: int = 5
    """Wrong code or birth date this many times in a row locks the share."""
    window: timedelta = timedelta(minutes=15)
    per_share: int = 20
    """Attempts on one share within ``window`` (any remote)."""
    per_remote: int = 30
    """Attempts from one address within ``window`` (any share, unknown ids included)."""


class SharingError(ImageBridgeError):
    """Base of the sharing errors; ``status`` is the HTTP status the API answers with."""

    status = 400
    code = "invalid_request"


class RedemptionRefused(SharingError):
    """The code or the date of birth is wrong (the answer does not say which)."""

    status = 401
    code = "wrong_code_or_birth_date"

    def __init__(self, reason: str, attempts_left: int) -> None:
        super().__init__(reason)
        self.attempts_left = attempts_left


class ShareUnavailable(SharingError):
    """The share was revoked or has expired."""

    status = 403
    code = "share_ended"

    def __init__(self, reason: str, state: ShareState) -> None:
        super().__init__(reason)
        self.state = state


class ShareLocked(SharingError):
    status = 423
    code = "share_locked"


class TooManyAttempts(SharingError):
    status = 429
    code = "rate_limited"

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


_RELATIVE = re.compile(r"^(\d{1,4})\s*([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``14d``, ``12h``, ``2w``, a date ``2025-01-31`` (the end of that day, UTC) or an ISO 8601
    date-time (UTC when it names no offset); InvalidInput for anything else."""
    value = text.strip().lower()
    relative = _RELATIVE.match(value)
    if relative:
        return (now or utcnow()) + int(relative[1]) * _UNITS[relative[2]]
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d")
            return day.replace(hour=23, minute=59, second=59, tzinfo=UTC)
        return aware(datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise InvalidInput(
            f"expiry '{text}' is not understood; write e.g. 14d, 12h, 2w, 2025-01-31 or 2025-01-31T18:00:00Z"
        ) from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_code() -> str:
    code = "".join(secrets.choice(CROCKFORD) for _ in range(CODE_LENGTH))
    return f"{code[:5]}-{code[5:]}"


def normalise(code: str) -> str:
    """What the recipient typed, as the code: case, spaces, hyphens and O/I/L mix-ups forgiven."""
    return re.sub(r"[\s\-]", "", code).upper().translate(_CONFUSABLE)


def birth_date(text: str) -> str:
    """YYYY-MM-DD (or DICOM's YYYYMMDD) as DICOM DA; InvalidInput for anything else."""
    value = text.strip()
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, pattern).strftime("%Y%m%d")
        except ValueError:
            continue
    raise InvalidInput("the date of birth must be written YYYY-MM-DD, e.g. 1970-03-21")


def expiry(expires: datetime | None, now: datetime) -> datetime:
    if expires is None:
        return now + DEFAULT_EXPIRY
    expires = aware(expires)
    if expires <= now:
        raise InvalidInput("the expiry must be in the future")
    if expires > now + MAX_EXPIRY + timedelta(minutes=5):
        raise InvalidInput("a share lasts at most one year")
    return expires
