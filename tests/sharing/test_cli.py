"""`imagebridge share create|list|revoke|unlock` as staff run them, and the shares they make working."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imagebridge.cli.main import app
from imagebridge.oauth.app import open_authorization
from imagebridge.services.sharing import RedemptionRefused, ShareLocked, Sharing
from tests.conftest import make_archive
from tests.sharing.helpers import BIRTH_A, People, fill


@dataclass
class Setup:
    options: list[str]
    people: People
    sharing: Sharing


@pytest.fixture
def setup(tmp_path: Path, database_url: str) -> Iterator[Setup]:
    archive = make_archive(tmp_path, database_url)
    authz = open_authorization(archive)
    people = fill(archive, authz)
    yield Setup(
        ["--data-dir", str(tmp_path / "data"), "--database-url", database_url],
        people,
        Sharing(archive, authz),
    )
    archive.close()


def share(setup: Setup, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["share", *args, *setup.options], env={"COLUMNS": "200", "NO_COLOR": "1"}
    )
    return result.exit_code, result.output


def test_create_prints_link_and_code_that_work(setup: Setup) -> None:
    p = setup.people
    code, out = share(
        setup,
        "create",
        "--study",
        p.sa1,
        "--expires",
        "14d",
        "--no-download",
        "--recipient",
        "Dr Who",
        "--base-url",
        "https://images.example.org/",
    )
    assert code == 0, out
    link = re.search(r"Link:\s+(\S+)", out)
    access = re.search(r"Access code:\s+(\S+)", out)
    assert link and access and link[1].startswith("https://images.example.org/s/")
    share_id = link[1].rsplit("/", 1)[1]
    session = setup.sharing.redeem(share_id, access[1], BIRTH_A, "10.1.1.1")
    assert session.share.studies == (p.sa1,) and session.share.recipient == "Dr Who"
    assert session.share.allow_download is False and session.share.created_by.startswith("cli:")


def test_patient_list_revoke_and_unlock(setup: Setup) -> None:
    p = setup.people
    code, out = share(setup, "create", "--patient", "HOSP|MRN-A", "--by", "front desk")
    assert code == 0, out
    share_id = re.search(r"Share id:\s+(\S+)", out)[1]  # type: ignore[index]
    assert set(setup.sharing.get(share_id).studies) == {p.sa1, p.sa2}
    code, listed = share(setup, "list", "--patient", "HOSP|MRN-A")
    assert code == 0 and share_id in listed and "active" in listed
    for _ in range(5):
        with pytest.raises((RedemptionRefused, ShareLocked)):
            setup.sharing.redeem(share_id, "11111-11111", BIRTH_A, "10.1.1.2")
    assert "locked" in share(setup, "list")[1]
    code, out = share(setup, "unlock", share_id, "--new-code")
    assert code == 0 and "New access code" in out
    fresh = re.search(r"New access code:\s+(\S+)", out)[1]  # type: ignore[index]
    assert setup.sharing.redeem(share_id, fresh, BIRTH_A, "10.1.1.3").access_token
    code, out = share(setup, "revoke", share_id)
    assert code == 0 and "revoked" in out
    assert share_id not in share(setup, "list")[1]
    assert "revoked" in share(setup, "list", "--all")[1]


def test_mistakes_get_clear_messages(setup: Setup) -> None:
    p = setup.people
    code, out = share(setup, "create")
    assert code == 2 and "--study UID" in out
    code, out = share(setup, "create", "--study", "1.2.3.4")
    assert code == 2 and "no study 1.2.3.4" in out
    code, out = share(setup, "create", "--study", p.sa1, "--study", p.sb1)
    assert code == 2 and "different patients" in out
    code, out = share(setup, "create", "--study", p.sa1, "--expires", "soon")
    assert code == 2 and "14d" in out
    code, out = share(setup, "revoke", "no-such-share")
    assert code == 2 and "no such share" in out
    code, out = share(setup, "list", "--patient", "nobody")
    assert code == 2 and "no patient" in out
