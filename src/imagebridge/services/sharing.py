"""Patient-controlled sharing: a link and an access code that open some of a patient's studies.

A patient (or staff for her) shares one study, several, or all of them (the list is fixed when the
share is made), optionally naming the recipient, with an expiry (default 30 days, at most a year)
and whether download is allowed. The share is a link ``/s/{share_id}`` (144 random bits) and an
access code of 10 Crockford base32 characters (50 bits, shown once, grouped ``XXXXX-XXXXX``, kept
only as an argon2id hash).

Redeeming a share takes the code AND the patient's date of birth (DICOM PatientBirthDate of the
shared studies' patient). It is rate-limited per share and per remote address, and the share locks
after :attr:`RedemptionLimits.max_failures` wrong answers in a row; the patient sees it locked and
can :meth:`Sharing.unlock` it or :meth:`Sharing.reissue_code`. A correct answer yields a real access
token of the local authorization server (``patient/ImagingStudy.rs`` for the share's patient; the
grant carries the share, so :meth:`AuthorizationServer.principal` fills ``Principal.studies``
with exactly the shared studies, ``Principal.share`` with the share id and ``Principal.download``
with whether copies may be taken). Revoking the share revokes every token issued from it at once.

Every step is audited (``share-create``, ``share-redeem``, ``share-redeem-failed``,
``share-revoke``, ``share-unlock``, ``share-reissue``).
"""

from __future__ import annotations

import builtins
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select, update

from imagebridge.audit import log as audit
from imagebridge.audit.store import AuditStore
from imagebridge.auth.authority import TokenAuthority
from imagebridge.auth.policy import Principal
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.tokens import Grant, aware, digest
from imagebridge.errors import InvalidInput, NotFound
from imagebridge.fhir.index import FhirIndex, StudyRow
from imagebridge.identifiers import public_id
from imagebridge.index import access
from imagebridge.index.schema import fhir_patient_ids, share_attempts, share_sessions, shares, studies
from imagebridge.services.archive import Archive
from imagebridge.services.share_model import (
    CODE_LENGTH,
    CROCKFORD,
    DEFAULT_EXPIRY,
    MAX_EXPIRY,
    CreatedShare,
    RedemptionLimits,
    RedemptionRefused,
    Share,
    ShareLocked,
    ShareSession,
    ShareState,
    ShareUnavailable,
    SharingError,
    TooManyAttempts,
    expiry,
    new_code,
    normalise,
    parse_expiry,
    utcnow,
)
from imagebridge.services.share_model import birth_date as parse_birth_date

__all__ = [
    "CODE_LENGTH",
    "CROCKFORD",
    "DEFAULT_EXPIRY",
    "MAX_EXPIRY",
    "SHARE_CLIENT",
    "CreatedShare",
    "RedemptionLimits",
    "RedemptionRefused",
    "Share",
    "ShareLocked",
    "ShareSession",
    "ShareState",
    "ShareTokenAuthority",
    "ShareUnavailable",
    "Sharing",
    "SharingError",
    "TooManyAttempts",
    "parse_expiry",
    "with_share_tokens",
]

SHARE_CLIENT = "imagebridge-share"
"""The ``client_id`` of every share token (not a registered client: the grant carries its policy)."""
SHARE_SCOPE = "patient/ImagingStudy.rs"
SESSION_LIFETIME = timedelta(hours=1)
ATTEMPTS_KEPT = timedelta(days=1)
PURGE_ONE_IN = 500
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


@dataclass
class Sharing:
    """Create, list, revoke and redeem shares of one archive, issuing tokens from ``authority``."""

    archive: Archive
    authority: AuthorizationServer
    limits: RedemptionLimits = field(default_factory=RedemptionLimits)
    audit: AuditStore = field(init=False)

    def __post_init__(self) -> None:
        self.engine = self.archive.engine
        self.index = FhirIndex(self.engine)
        self.audit = AuditStore.of(self.engine)

    # --- the patient's side ---------------------------------------------------------------

    def create(
        self,
        *,
        patient: str,
        studies: list[str] | None,
        created_by: str,
        recipient: str | None = None,
        expires: datetime | None = None,
        allow_download: bool = True,
    ) -> CreatedShare:
        """Share ``studies`` of ``patient`` (None: all her studies now). InvalidInput / NotFound explain refusals."""
        now = utcnow()
        chosen = self._studies_to_share(patient, studies)
        expires_at = expiry(expires, now)
        recipient = (recipient or "").strip()[:200] or None
        code = new_code()
        share = Share(
            share_id=public_id(18),
            patient=patient,
            studies=tuple(chosen),
            created_by=created_by,
            recipient=recipient,
            allow_download=allow_download,
            created_at=now,
            expires_at=expires_at,
        )
        with self.engine.begin() as conn:
            conn.execute(insert(shares).values(**_share_row(share), code_hash=_hasher.hash(normalise(code))))
        self._audit(
            "success",
            "share created",
            "share-create",
            share,
            user=created_by,
            recipient=recipient,
            allow_download=allow_download,
            expires=expires_at.isoformat(),
        )
        return CreatedShare(share, code)

    def list(self, patient: str | None = None, include_revoked: bool = False) -> list[Share]:
        """Shares newest first; of one patient when ``patient`` is given."""
        query = select(shares).order_by(shares.c.created_at.desc(), shares.c.pk.desc())
        if patient is not None:
            query = query.where(shares.c.patient == patient)
        if not include_revoked:
            query = query.where(shares.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_share(r) for r in conn.execute(query).all()]

    def get(self, share_id: str) -> Share:
        with self.engine.connect() as conn:
            row = conn.execute(select(shares).where(shares.c.share_id == share_id)).first()
        if row is None:
            raise NotFound("no such share")
        return _share(row)

    def revoke(self, share_id: str, by: str) -> Share:
        """End the share now: every token issued from it stops working at once. Revoking twice is harmless."""
        share = self.get(share_id)
        if share.revoked_at is None:
            now = utcnow()
            with self.engine.begin() as conn:
                conn.execute(
                    update(shares)
                    .where(shares.c.share_id == share_id, shares.c.revoked_at.is_(None))
                    .values(revoked_at=now, revoked_by=by)
                )
            self._revoke_sessions(share_id)
            share = self.get(share_id)
            self._audit("success", "share revoked", "share-revoke", share, user=by)
        return share

    def unlock(self, share_id: str, by: str) -> Share:
        """Clear a lock (and the count of wrong answers) with the same code."""
        share = self.get(share_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(shares).where(shares.c.share_id == share_id).values(failed_attempts=0, locked_at=None)
            )
        self._audit("success", "share unlocked", "share-unlock", share, user=by)
        return self.get(share_id)

    def reissue_code(self, share_id: str, by: str) -> CreatedShare:
        """A new access code (the old one stops working), which also clears a lock."""
        share = self.get(share_id)
        if share.state() in (ShareState.REVOKED, ShareState.EXPIRED):
            raise ShareUnavailable(f"the share has {share.state().value}; create a new one", share.state())
        code = new_code()
        with self.engine.begin() as conn:
            conn.execute(
                update(shares)
                .where(shares.c.share_id == share_id)
                .values(code_hash=_hasher.hash(normalise(code)), failed_attempts=0, locked_at=None)
            )
        self._audit("success", "new access code issued", "share-reissue", share, user=by)
        return CreatedShare(self.get(share_id), code)

    def patient_of(self, study_uid: str) -> str:
        """The FHIR Patient id of a study (for sharing by Study Instance UID); NotFound if unknown."""
        rows = self.index.studies([studies.c.study_uid == study_uid])
        if not rows:
            raise NotFound(f"no study {study_uid} in the archive")
        return rows[0].patient.fhir_id

    def shared_studies(self, share: Share) -> builtins.list[StudyRow]:
        """The shared studies still in the archive, newest first (date, modality, description, series)."""
        return self.index.studies([studies.c.study_uid.in_(list(share.studies))])

    # --- the recipient's side -------------------------------------------------------------

    def redeem(self, share_id: str, code: str, birth_date: str, remote: str | None) -> ShareSession:
        """Check the code and the patient's birth date; return a token for exactly the shared studies.

        Raises NotFound, ShareUnavailable (revoked/expired), ShareLocked, TooManyAttempts (with
        ``retry_after`` seconds), RedemptionRefused (with ``attempts_left``) or InvalidInput (a date
        that is not one)."""
        where = (remote or "unknown")[:128]
        share_id = share_id[:64]
        self._check_rate(
            share_attempts.c.remote == where, self.limits.per_remote, "this address", share_id, remote
        )
        try:
            share = self.get(share_id)
        except NotFound:
            self._attempt(share_id, where, success=False)
            audit.record(
                "failure",
                "unknown share",
                store=self.audit,
                action="share-redeem-failed",
                share=share_id,
                remote=remote,
            )
            raise
        wanted = parse_birth_date(birth_date)
        state = share.state()
        if state in (ShareState.REVOKED, ShareState.EXPIRED):
            self._attempt(share_id, where, success=False)
            self._audit(
                "failure", f"the share has {state.value}", "share-redeem-failed", share, remote=remote
            )
            raise ShareUnavailable(f"this share has {state.value}; ask the patient for a new one", state)
        if state is ShareState.LOCKED:
            self._audit("failure", "the share is locked", "share-redeem-failed", share, remote=remote)
            raise ShareLocked(
                "this share is locked after too many wrong answers; ask the patient to unlock it"
            )
        self._check_rate(
            share_attempts.c.share_id == share_id, self.limits.per_share, "this share", share_id, remote
        )
        counted = self._reserve_attempt(share, remote)
        matched = self._answers_match(share, code, wanted)
        self._attempt(share_id, where, success=matched)
        if not matched:
            return self._refuse(share, counted, remote)
        return self._open_session(share, remote)

    # --- internals ------------------------------------------------------------------------

    def _answers_match(self, share: Share, code: str, birth_date: str) -> bool:
        with self.engine.connect() as conn:
            code_hash = conn.execute(
                select(shares.c.code_hash).where(shares.c.share_id == share.share_id)
            ).scalar()
        try:
            code_ok: bool = _hasher.verify(str(code_hash), normalise(code))
        except (VerificationError, InvalidHashError):
            code_ok = False
        return code_ok and secrets.compare_digest(birth_date, self._patient_birth_date(share.patient))

    def _reserve_attempt(self, share: Share, remote: str | None) -> int:
        """Count this answer as wrong before checking it, atomically, so that answers sent in
        parallel cannot get more than ``max_failures`` checks in; a right answer resets the count."""
        limit = self.limits.max_failures
        with self.engine.begin() as conn:
            counted = conn.execute(
                update(shares)
                .where(
                    shares.c.share_id == share.share_id,
                    shares.c.failed_attempts < limit,
                    shares.c.locked_at.is_(None),
                )
                .values(failed_attempts=shares.c.failed_attempts + 1)
                .returning(shares.c.failed_attempts)
            ).scalar_one_or_none()
        if counted is None:
            self._audit("failure", "the share is locked", "share-redeem-failed", share, remote=remote)
            raise ShareLocked(
                "this share is locked after too many wrong answers; ask the patient to unlock it"
            )
        return int(counted)

    def _refuse(self, share: Share, counted: int, remote: str | None) -> ShareSession:
        limit = self.limits.max_failures
        left = max(limit - counted, 0)
        if left == 0:
            with self.engine.begin() as conn:
                conn.execute(
                    update(shares)
                    .where(shares.c.share_id == share.share_id, shares.c.locked_at.is_(None))
                    .values(locked_at=utcnow())
                )
        reason = "wrong access code or date of birth"
        self._audit("failure", reason, "share-redeem-failed", share, attempts_left=left, remote=remote)
        if left == 0:
            raise ShareLocked("too many wrong answers: the share is now locked; ask the patient to unlock it")
        raise RedemptionRefused(f"{reason}; {left} attempt{'s' if left != 1 else ''} left", left)

    def _open_session(self, share: Share, remote: str | None) -> ShareSession:
        now = utcnow()
        lifetime = min(SESSION_LIFETIME, share.expires_at - now)
        grant = Grant(
            SHARE_CLIENT,
            SHARE_SCOPE,
            patient=share.patient,
            data={
                "policy": {"patients": [share.patient], "studies": list(share.studies)},
                "share": {
                    "id": share.share_id,
                    "studies": list(share.studies),
                    "download": share.allow_download,
                },
            },
        )
        token, record = self.authority.tokens.issue("access", grant, max(int(lifetime.total_seconds()), 1))
        with self.engine.begin() as conn:
            conn.execute(update(shares).where(shares.c.share_id == share.share_id).values(failed_attempts=0))
            conn.execute(
                insert(share_sessions).values(
                    share_id=share.share_id,
                    grant_id=grant.grant_id,
                    remote=remote,
                    created_at=now,
                    expires_at=record.expires_at,
                )
            )
        if self.get(share.share_id).revoked_at is not None:
            self.authority.tokens.revoke_grant(grant.grant_id)
            raise ShareUnavailable("this share was revoked", ShareState.REVOKED)
        self._audit(
            "success",
            "share opened with the access code and date of birth",
            "share-redeem",
            share,
            remote=remote,
        )
        return ShareSession(token, record.expires_at, share)

    def _revoke_sessions(self, share_id: str) -> None:
        with self.engine.connect() as conn:
            grants = conn.execute(
                select(share_sessions.c.grant_id).where(share_sessions.c.share_id == share_id)
            )
            grant_ids = [r.grant_id for r in grants]
        for grant_id in grant_ids:
            self.authority.tokens.revoke_grant(grant_id)

    def _check_rate(self, condition: Any, limit: int, what: str, share_id: str, remote: str | None) -> None:
        since = utcnow() - self.limits.window
        query = select(func.count(), func.min(share_attempts.c.at)).where(
            condition, share_attempts.c.at >= since
        )
        with self.engine.connect() as conn:
            count, oldest = conn.execute(query).one()
        if count >= limit:
            retry = int((aware(oldest) + self.limits.window - utcnow()).total_seconds()) + 1
            audit.record(
                "failure",
                f"too many attempts from {what}",
                store=self.audit,
                action="share-redeem-failed",
                share=share_id,
                remote=remote,
            )
            raise TooManyAttempts(
                f"too many attempts from {what}; try again in {retry} seconds", max(retry, 1)
            )

    def purge_attempts(self, older_than: timedelta = ATTEMPTS_KEPT) -> int:
        """Forget redemption attempts older than the rate-limit memory (done now and then by redeem)."""
        with self.engine.begin() as conn:
            done = conn.execute(delete(share_attempts).where(share_attempts.c.at < utcnow() - older_than))
        return int(done.rowcount or 0)

    def _attempt(self, share_id: str, remote: str, *, success: bool) -> None:
        if secrets.randbelow(PURGE_ONE_IN) == 0:
            self.purge_attempts()
        with self.engine.begin() as conn:
            conn.execute(
                insert(share_attempts).values(share_id=share_id, remote=remote, at=utcnow(), success=success)
            )

    def _patient_birth_date(self, patient: str) -> str:
        rows = self.index.patients([fhir_patient_ids.c.fhir_id == patient])
        return rows[0].birth_date.strip() if rows else ""

    def _studies_to_share(self, patient: str, wanted: builtins.list[str] | None) -> builtins.list[str]:
        rows = self.index.studies([fhir_patient_ids.c.fhir_id == patient])
        if not rows:
            raise NotFound("this patient has no studies in the archive")
        if not rows[0].patient.birth_date.strip():
            raise InvalidInput(
                "the patient's date of birth is not recorded, so a recipient could not confirm it; "
                "correct the studies' PatientBirthDate first"
            )
        own = [r.uid for r in rows]
        restricted = access.restricted_studies(self.engine, own)
        if wanted is None:
            shareable = [uid for uid in own if uid not in restricted]
            if not shareable:
                raise InvalidInput("every study of this patient is restricted, and a share never carries one")
            return shareable
        chosen = list(dict.fromkeys(uid.strip() for uid in wanted if uid.strip()))
        if not chosen:
            raise InvalidInput("choose at least one study to share (or share all of them)")
        foreign = [uid for uid in chosen if uid not in own]
        if foreign:
            raise InvalidInput(f"not a study of this patient: {', '.join(foreign)}")
        kept = [uid for uid in chosen if uid in restricted]
        if kept:
            raise InvalidInput(
                "restricted (only the patient and administrators may see it), and a share never "
                f"carries a restricted study: {', '.join(kept)}; leave it out"
            )
        return chosen

    def _audit(self, outcome: str, reason: str, action: str, share: Share, **fields: Any) -> None:
        audit.record(
            outcome,
            reason,
            store=self.audit,
            action=action,
            share=share.share_id,
            patient=share.patient,
            study=share.studies[0] if len(share.studies) == 1 else None,
            studies=list(share.studies),
            **fields,
        )


class ShareTokenAuthority:
    """A token authority that also knows share tokens (integrated mode: the EHR is the authority,
    but a share's session token is issued here, by the local server, and must resolve here).

    Share tokens are looked up locally; every other token goes to ``inner``. A token found not to
    be local is remembered (bounded), so each outside token costs at most one local lookup."""

    def __init__(self, inner: TokenAuthority, local: AuthorizationServer, remember: int = 10000) -> None:
        self.inner, self.local, self.remember = inner, local, remember
        self._foreign: dict[str, None] = {}
        self._lock = threading.Lock()

    def principal(self, token: str) -> Principal:
        key = digest(token)
        with self._lock:
            foreign = key in self._foreign
        if not foreign:
            record = self.local.tokens.find(token)
            if record is not None and record.grant.client_id == SHARE_CLIENT:
                return self.local.principal(token)
            if record is None:
                with self._lock:
                    if len(self._foreign) >= self.remember:
                        self._foreign.pop(next(iter(self._foreign)))
                    self._foreign[key] = None
        return self.inner.principal(token)


def with_share_tokens(authority: TokenAuthority, local: AuthorizationServer) -> TokenAuthority:
    """``authority`` itself when it is the local server, else one that also resolves share tokens."""
    return authority if authority is local else ShareTokenAuthority(authority, local)


def _share_row(share: Share) -> dict[str, Any]:
    return {
        "share_id": share.share_id,
        "patient": share.patient,
        "studies": json.dumps(list(share.studies)),
        "created_by": share.created_by,
        "recipient": share.recipient,
        "allow_download": share.allow_download,
        "created_at": share.created_at,
        "expires_at": share.expires_at,
        "failed_attempts": 0,
    }


def _share(row: Any) -> Share:
    return Share(
        share_id=row.share_id,
        patient=row.patient,
        studies=tuple(json.loads(row.studies)),
        created_by=row.created_by,
        recipient=row.recipient,
        allow_download=bool(row.allow_download),
        created_at=aware(row.created_at),
        expires_at=aware(row.expires_at),
        failed_attempts=row.failed_attempts,
        locked_at=aware(row.locked_at) if row.locked_at else None,
        revoked_at=aware(row.revoked_at) if row.revoked_at else None,
        revoked_by=row.revoked_by,
    )
