"""``imagebridge share create|list|revoke|unlock``: patient-controlled sharing from the command line.

Staff share for a patient what the patient would share in the portal: a link and an access code
(shown once). The recipient opens the link, types the code and the patient's date of birth.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from imagebridge.cli import common
from imagebridge.cli.auth import resolve_patients
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.config import Settings
from imagebridge.errors import ImageBridgeError
from imagebridge.oauth.app import open_authorization
from imagebridge.services.archive import open_archive
from imagebridge.services.sharing import CreatedShare, Share, Sharing, parse_expiry

app = typer.Typer(
    help="Share a patient's studies by link and access code; list and revoke shares.", no_args_is_help=True
)

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="The server's public address for the link (default: setting public_base_url)."
    ),
]
By = Annotated[
    str | None, typer.Option("--by", help="Who does this, for the access log (default: your login).")
]


def install(main: typer.Typer) -> None:
    main.add_typer(app, name="share")


@contextmanager
def _sharing(data_dir: Path | None, database_url: str | None, config: Path | None) -> Iterator[Sharing]:
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    try:
        archive = open_archive(settings, upgrade=settings.embedded_index)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    except Exception as exc:  # the database may be down or the URL wrong
        common.fail(f"cannot open the index ({type(exc).__name__}): {str(exc).splitlines()[0]}")
    service = Sharing(archive, open_authorization(archive))
    try:
        yield service
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    finally:
        service.audit.flush()
        archive.close()


def _base(settings: Settings, given: str | None) -> str:
    base = given or settings.public_base_url or f"http://{settings.host}:{settings.port}"
    return base.rstrip("/")


def _who(given: str | None) -> str:
    return given or f"cli:{getpass.getuser()}"


@app.command("create")
def create(
    study: Annotated[
        list[str] | None, typer.Option("--study", help="A Study Instance UID to share. Repeatable.")
    ] = None,
    patient: Annotated[
        str | None,
        typer.Option("--patient", help="Share ALL of this patient's studies (FHIR id, MRN or ISSUER|MRN)."),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", help="14d, 12h, 2w or a date (YYYY-MM-DD); default 30 days, at most a year."
        ),
    ] = None,
    no_download: Annotated[
        bool, typer.Option("--no-download", help="The recipient may view but not download.")
    ] = False,
    recipient: Annotated[
        str | None, typer.Option("--recipient", help="Who the share is for (name or email).")
    ] = None,
    base_url: BaseUrl = None,
    by: By = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Share studies: prints the link and the access code (the code is shown only now)."""
    if bool(study) == bool(patient):
        common.fail("give --study UID (repeatable) or --patient ID, not both and not neither")
    try:
        until = parse_expiry(expires) if expires else None
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    with _sharing(data_dir, database_url, config) as sharing:
        if patient:
            owner = resolve_patients(sharing.engine, [patient])[0]
        else:
            owners = {sharing.patient_of(uid) for uid in study or []}
            if len(owners) != 1:
                common.fail("the studies belong to different patients; share each patient's separately")
            owner = owners.pop()
        created = sharing.create(
            patient=owner,
            studies=None if patient else list(study or []),
            created_by=_who(by),
            recipient=recipient,
            expires=until,
            allow_download=not no_download,
        )
        _print_created(created, _base(sharing.archive.settings, base_url))


def _print_created(created: CreatedShare, base: str) -> None:
    share = created.share
    console.print(f"Link:        {base}{created.link}")
    console.print(
        f"Access code: [bold]{created.code}[/]   (shown once; the recipient also needs the date of birth)"
    )
    console.print(f"Studies:     {', '.join(share.studies)}")
    console.print(f"Expires:     {share.expires_at:%Y-%m-%d %H:%M} UTC")
    console.print(f"Download:    {'allowed' if share.allow_download else 'not allowed'}")
    console.print(f"Share id:    {share.share_id}   (revoke with: imagebridge share revoke {share.share_id})")


@app.command("list")
def list_shares(
    patient: Annotated[
        str | None, typer.Option("--patient", help="Only this patient's shares (FHIR id, MRN or ISSUER|MRN).")
    ] = None,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked shares.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Shares, newest first, with their state (active, locked, revoked, expired)."""
    with _sharing(data_dir, database_url, config) as sharing:
        owner = resolve_patients(sharing.engine, [patient])[0] if patient else None
        found = sharing.list(owner, include_revoked=include_revoked)
    if not found:
        console.print("No shares." + ("" if include_revoked else " (--all also lists revoked ones)"))
        return
    table = Table("share id", "patient", "studies", "recipient", "expires (UTC)", "download", "state")
    for share in found:
        table.add_row(*_row(share))
    console.print(table)


def _row(share: Share) -> list[str]:
    return [
        share.share_id,
        share.patient[:12],
        str(len(share.studies)),
        share.recipient or "",
        f"{share.expires_at:%Y-%m-%d %H:%M}",
        "yes" if share.allow_download else "no",
        share.state().value,
    ]


@app.command("revoke")
def revoke(
    share_id: Annotated[str, typer.Argument(help="The share id (see 'imagebridge share list').")],
    by: By = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """End a share now: its link and every session opened with it stop working at once."""
    with _sharing(data_dir, database_url, config) as sharing:
        share = sharing.revoke(share_id, by=_who(by))
    console.print(f"Share {share.share_id} revoked; its link and sessions no longer work.")


@app.command("unlock")
def unlock(
    share_id: Annotated[str, typer.Argument(help="The share id (see 'imagebridge share list').")],
    new_code: Annotated[bool, typer.Option("--new-code", help="Also issue a new access code.")] = False,
    by: By = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Unlock a share locked after wrong answers (optionally with a new access code)."""
    with _sharing(data_dir, database_url, config) as sharing:
        if new_code:
            created = sharing.reissue_code(share_id, by=_who(by))
            console.print(f"New access code: [bold]{created.code}[/] (the old one no longer works)")
        else:
            sharing.unlock(share_id, by=_who(by))
            console.print(f"Share {share_id} unlocked; the same access code works again.")
