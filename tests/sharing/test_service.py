"""The sharing service itself: create, list, revoke, redeem, lockout, rate limits, expiry."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from imagebridge.auth.errors import InvalidToken
from imagebridge.auth.policy import Principal
from imagebridge.auth.scopes import parse
from imagebridge.errors import InvalidInput, NotFound
from imagebridge.index import access
from imagebridge.index.schema import share_attempts, shares
from imagebridge.services.sharing import (
    CROCKFORD,
    RedemptionLimits,
    RedemptionRefused,
    ShareLocked,
    ShareState,
    ShareUnavailable,
    Sharing,
    TooManyAttempts,
    parse_expiry,
    with_share_tokens,
)
from tests.sharing.conftest import Served
from tests.sharing.helpers import BIRTH_A


def test_create_list_get_revoke(served: Served) -> None:
    p, sharing = served.people, served.sharing
    created = sharing.create(patient=p.a, studies=[p.sa1], created_by="ann", recipient="Dr Who")
    share = created.share
    assert created.link == f"/s/{share.share_id}" and len(share.share_id) >= 24
    assert len(created.code) == 11 and created.code[5] == "-"
    assert set(created.code.replace("-", "")) <= set(CROCKFORD)
    assert share.studies == (p.sa1,) and share.state() is ShareState.ACTIVE
    assert timedelta(days=29) < share.expires_at - datetime.now(UTC) <= timedelta(days=30)
    everything = sharing.create(patient=p.a, studies=None, created_by="ann", allow_download=False)
    assert set(everything.share.studies) == {p.sa1, p.sa2}
    assert [s.share_id for s in sharing.list(p.a)] == [everything.share.share_id, share.share_id]
    assert sharing.list(p.b) == []
    assert sharing.get(share.share_id).recipient == "Dr Who"
    revoked = sharing.revoke(share.share_id, by="ann")
    assert revoked.state() is ShareState.REVOKED and revoked.revoked_by == "ann"
    assert [s.share_id for s in sharing.list(p.a)] == [everything.share.share_id]
    assert len(sharing.list(p.a, include_revoked=True)) == 2
    with pytest.raises(NotFound):
        sharing.get("no-such-share")


def test_create_refuses_bad_input(served: Served) -> None:
    p, sharing = served.people, served.sharing
    with pytest.raises(InvalidInput, match="not a study of this patient"):
        sharing.create(patient=p.a, studies=[p.sb1], created_by="ann")
    with pytest.raises(InvalidInput, match="at least one study"):
        sharing.create(patient=p.a, studies=[], created_by="ann")
    with pytest.raises(NotFound):
        sharing.create(patient="nobody", studies=None, created_by="ann")
    with pytest.raises(InvalidInput, match="future"):
        sharing.create(patient=p.a, studies=None, created_by="ann", expires=datetime.now(UTC) - timedelta(1))
    with pytest.raises(InvalidInput, match="one year"):
        sharing.create(
            patient=p.a, studies=None, created_by="ann", expires=datetime.now(UTC) + timedelta(400)
        )


def test_code_is_stored_hashed(served: Served) -> None:
    created = served.sharing.create(patient=served.people.a, studies=None, created_by="ann")
    with served.archive.engine.connect() as conn:
        stored = conn.execute(shares.select()).first()
    assert stored is not None
    assert created.code.replace("-", "") not in stored.code_hash and stored.code_hash.startswith("$argon2id$")


def test_redeem_gives_a_token_limited_to_the_shared_studies(served: Served) -> None:
    p, sharing = served.people, served.sharing
    created = sharing.create(patient=p.a, studies=[p.sa1], created_by="ann", allow_download=False)
    typed = created.code.lower().replace("-", " ").replace("0", "o")
    session = sharing.redeem(created.share.share_id, typed, BIRTH_A, "10.0.0.5")
    principal = served.authz.principal(session.access_token)
    assert principal.patient == p.a and principal.studies == (p.sa1,)
    assert principal.share == created.share.share_id and principal.download is False
    assert session.expires_at <= created.share.expires_at
    sharing.revoke(created.share.share_id, by="ann")
    with pytest.raises(InvalidToken):
        served.authz.principal(session.access_token)
    with pytest.raises(ShareUnavailable):
        sharing.redeem(created.share.share_id, created.code, BIRTH_A, "10.0.0.5")


def test_wrong_answers_lock_the_share(served: Served) -> None:
    p, sharing = served.people, served.sharing
    created = sharing.create(patient=p.a, studies=None, created_by="ann")
    share_id = created.share.share_id
    with pytest.raises(RedemptionRefused) as wrong_dob:
        sharing.redeem(share_id, created.code, "1980-01-02", "10.0.0.6")
    assert wrong_dob.value.attempts_left == 4
    for left in (3, 2, 1):
        with pytest.raises(RedemptionRefused) as guessed:
            sharing.redeem(share_id, "AAAAA-AAAAA", BIRTH_A, "10.0.0.6")
        assert guessed.value.attempts_left == left
    with pytest.raises(ShareLocked):
        sharing.redeem(share_id, "AAAAA-AAAAB", BIRTH_A, "10.0.0.6")
    assert sharing.get(share_id).state() is ShareState.LOCKED
    with pytest.raises(ShareLocked):
        sharing.redeem(share_id, created.code, BIRTH_A, "10.0.0.7")
    sharing.unlock(share_id, by="ann")
    assert sharing.redeem(share_id, created.code, BIRTH_A, "10.0.0.7").access_token
    reissued = sharing.reissue_code(share_id, by="ann")
    with pytest.raises(RedemptionRefused):
        sharing.redeem(share_id, created.code, BIRTH_A, "10.0.0.7")
    assert sharing.redeem(share_id, reissued.code, BIRTH_A, "10.0.0.7").share.share_id == share_id


def test_a_right_answer_resets_the_count(served: Served) -> None:
    p, sharing = served.people, served.sharing
    created = sharing.create(patient=p.a, studies=None, created_by="ann")
    share_id = created.share.share_id
    for _ in range(4):
        with pytest.raises(RedemptionRefused):
            sharing.redeem(share_id, created.code, "1999-09-09", "10.0.0.8")
    sharing.redeem(share_id, created.code, BIRTH_A, "10.0.0.8")
    with pytest.raises(RedemptionRefused) as again:
        sharing.redeem(share_id, created.code, "1999-09-09", "10.0.0.8")
    assert again.value.attempts_left == 4


def test_rate_limits_per_remote_and_per_share(served: Served) -> None:
    p = served.people
    sharing = Sharing(
        served.archive, served.authz, RedemptionLimits(per_share=3, per_remote=4, max_failures=99)
    )
    one = sharing.create(patient=p.a, studies=None, created_by="ann")
    two = sharing.create(patient=p.a, studies=None, created_by="ann")
    for _ in range(3):
        sharing.redeem(one.share.share_id, one.code, BIRTH_A, "10.0.1.1")
    with pytest.raises(TooManyAttempts) as per_share:
        sharing.redeem(one.share.share_id, one.code, BIRTH_A, "10.0.1.2")
    assert 1 <= per_share.value.retry_after <= 15 * 60 + 1
    with pytest.raises(NotFound):
        sharing.redeem("guessed-id", "AAAAA-AAAAA", BIRTH_A, "10.0.1.1")
    with pytest.raises(TooManyAttempts):
        sharing.redeem(two.share.share_id, two.code, BIRTH_A, "10.0.1.1")
    assert sharing.redeem(two.share.share_id, two.code, BIRTH_A, "10.0.1.3").access_token
    sharing.audit.flush()
    limited = [e for e in sharing.audit.search(actions=["share-redeem-failed"]) if "too many" in e.reason]
    assert {(e.share_id, e.remote) for e in limited} == {
        (one.share.share_id, "10.0.1.2"),
        (two.share.share_id, "10.0.1.1"),
    }


def test_expiry_ends_the_share_and_caps_the_token(served: Served) -> None:
    p, sharing = served.people, served.sharing
    soon = datetime.now(UTC) + timedelta(minutes=10)
    created = sharing.create(patient=p.a, studies=None, created_by="ann", expires=soon)
    session = sharing.redeem(created.share.share_id, created.code, BIRTH_A, None)
    assert session.expires_at <= soon
    with served.archive.engine.begin() as conn:
        conn.execute(update(shares).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(ShareUnavailable) as ended:
        sharing.redeem(created.share.share_id, created.code, BIRTH_A, None)
    assert ended.value.state is ShareState.EXPIRED


def test_birth_date_must_be_a_date(served: Served) -> None:
    created = served.sharing.create(patient=served.people.a, studies=None, created_by="ann")
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        served.sharing.redeem(created.share.share_id, created.code, "01/01/1980", None)
    assert served.sharing.redeem(created.share.share_id, created.code, "19800101", None).access_token


def test_parse_expiry() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_expiry("14d", now) == now + timedelta(days=14)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2025-02-01") == datetime(2025, 2, 1, 23, 59, 59, tzinfo=UTC)
    assert parse_expiry("2025-02-01T10:00:00+01:00") == datetime(2025, 2, 1, 9, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="14d"):
        parse_expiry("next tuesday")


def test_old_attempts_are_forgotten(served: Served) -> None:
    created = served.sharing.create(patient=served.people.a, studies=None, created_by="ann")
    served.sharing.redeem(created.share.share_id, created.code, BIRTH_A, "10.3.3.3")
    assert served.sharing.purge_attempts(timedelta(days=1)) == 0
    assert served.sharing.purge_attempts(timedelta(seconds=-1)) == 1


class _Ehr:
    """Stands in for the EHR's introspection: knows one token of its own, refuses everything else."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def principal(self, token: str) -> Principal:
        self.asked.append(token)
        if token == "ehr-token":
            return Principal(client_id="ehr-app", scopes=parse("patient/ImagingStudy.rs"), patient="p-ehr")
        raise InvalidToken("unknown to the EHR")


def test_share_tokens_resolve_locally_when_the_ehr_is_the_authority(served: Served) -> None:
    ehr = _Ehr()
    authority = with_share_tokens(ehr, served.authz)
    assert with_share_tokens(served.authz, served.authz) is served.authz
    created = served.sharing.create(patient=served.people.a, studies=[served.people.sa1], created_by="ann")
    session = served.sharing.redeem(created.share.share_id, created.code, BIRTH_A, None)
    assert authority.principal(session.access_token).studies == (served.people.sa1,)
    assert authority.principal("ehr-token").client_id == "ehr-app"
    assert authority.principal("ehr-token").patient == "p-ehr"
    assert ehr.asked == ["ehr-token", "ehr-token"]
    with pytest.raises(InvalidToken):
        authority.principal("garbage")
    served.sharing.revoke(created.share.share_id, by="ann")
    with pytest.raises(InvalidToken):
        authority.principal(session.access_token)


def test_guesses_sent_in_parallel_get_no_more_than_five_checks(served: Served) -> None:
    created = served.sharing.create(patient=served.people.a, studies=None, created_by="ann")
    share_id = created.share.share_id
    outcomes: list[str] = []

    def guess(n: int) -> None:
        try:
            served.sharing.redeem(share_id, f"ZZZZZ-ZZZ{n:02d}", BIRTH_A, f"10.4.4.{n}")
        except (RedemptionRefused, ShareLocked) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with served.archive.engine.connect() as conn:
        checked = conn.execute(select(func.count()).where(share_attempts.c.share_id == share_id)).scalar_one()
    assert checked == 5 and len(outcomes) == 12
    assert outcomes.count("RedemptionRefused") == 4
    assert served.sharing.get(share_id).state() is ShareState.LOCKED


def test_restricted_studies_are_never_shared(served: Served) -> None:
    """A share never carries a restricted study (``auth.policy``): named, it is refused with the
    reason; "all" leaves it out; a patient whose every study is restricted gets a reason."""
    p, sharing, engine = served.people, served.sharing, served.archive.engine
    access.restrict(engine, p.sa2, "mental health", "sensitive", by="admin")
    with pytest.raises(InvalidInput, match="a restricted study"):
        sharing.create(patient=p.a, studies=[p.sa2], created_by="ann")
    assert sharing.create(patient=p.a, studies=None, created_by="ann").share.studies == (p.sa1,)
    access.restrict(engine, p.sa1, "mental health", "sensitive", by="admin")
    with pytest.raises(InvalidInput, match="every study of this patient is restricted"):
        sharing.create(patient=p.a, studies=None, created_by="ann")
    assert len(sharing.list(p.a)) == 1
