"""``imagebridge study restrict|unrestrict|restrictions`` and ``imagebridge user exclude-study``.

Restricted studies (a sensitive category, with a reason) are left out of QIDO-RS and FHIR
searches and refused on retrieval, except to the patient themselves and administrators
(``auth.policy`` rule 8). An exclusion hides one study from one user, typically a proxy (rule 9).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine

from imagebridge.auth.users import Users
from imagebridge.cli import auth, common
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.errors import ImageBridgeError
from imagebridge.index import access

study_app = typer.Typer(help="Restrict studies: sensitive categories kept from searches and retrieval.")

Uid = Annotated[str, typer.Argument(help="A Study, Series or SOP Instance UID in the archive.")]


def install(app: typer.Typer) -> None:
    """Register ``study`` on the main command and the exclusion commands on ``user``."""
    app.add_typer(study_app, name="study", no_args_is_help=True)
    auth.user_app.command("exclude-study")(exclude_study)
    auth.user_app.command("include-study")(include_study)
    auth.user_app.command("exclusions")(list_exclusions)


def _engine(data_dir: Path | None, database_url: str | None, config: Path | None) -> Engine:
    return common.open_index(common.settings(config, data_dir=data_dir, database_url=database_url))


@study_app.command("restrict")
def restrict(
    uid: Uid,
    category: Annotated[str, typer.Option("--category", help="The sensitive category, e.g. 'sensitive'.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record and the audit trail.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Restrict a study, or one series or instance of it (then the whole study is refused whole)."""
    engine = _engine(data_dir, database_url, config)
    try:
        made = access.restrict(engine, uid, category, reason, by=getpass.getuser())
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(
        f"restricted {made.level} [bold]{uid}[/] ({made.category}): only the patient and "
        "administrators can see it now; lift it with [bold]imagebridge study unrestrict UID[/]"
    )


@study_app.command("unrestrict")
def unrestrict(
    uid: Uid, data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None
) -> None:
    """Lift the restriction on a study, series or instance."""
    try:
        access.unrestrict(_engine(data_dir, database_url, config), uid)
    except ImageBridgeError as exc:
        common.fail(f"{exc.reason}; see imagebridge study restrictions")
    console.print(f"lifted the restriction on [bold]{uid}[/]")


@study_app.command("restrictions")
def restrictions(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None
) -> None:
    """List the restricted studies, series and instances."""
    found = access.restrictions(_engine(data_dir, database_url, config))
    if not found:
        console.print(
            "nothing is restricted; restrict with "
            "[bold]imagebridge study restrict UID --category C --reason R[/]"
        )
        return
    table = Table("level", "UID", "study", "category", "reason", "by", "since")
    for r in found:
        since = r.created_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(r.level, r.uid, r.study_uid, r.category, r.reason, r.created_by, since)
    console.print(table)


def exclude_study(
    username: Annotated[str, typer.Argument(help="The user, as `user list` shows it (typically a proxy).")],
    study: Annotated[str, typer.Argument(help="The Study Instance UID to hide from this user.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record.")] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Leave a study out of one user's view: their tokens neither find nor retrieve it."""
    engine = _engine(data_dir, database_url, config)
    if Users(engine).get(username) is None:
        common.fail(f"no user '{username}'; see imagebridge user list")
    try:
        access.exclude(engine, username, study, reason)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"study [bold]{study}[/] is now hidden from [bold]{username}[/]")


def include_study(
    username: Annotated[str, typer.Argument(help="The user the study was hidden from.")],
    study: Annotated[str, typer.Argument(help="The Study Instance UID to show again.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Undo exclude-study: the user sees the study again (if their access reaches it)."""
    try:
        access.include(_engine(data_dir, database_url, config), username, study)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"study [bold]{study}[/] is visible to [bold]{username}[/] again")


def list_exclusions(
    username: Annotated[str | None, typer.Argument(help="Only this user's exclusions.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """List the studies hidden from users."""
    found = access.exclusions(_engine(data_dir, database_url, config), username)
    if not found:
        console.print("no study is hidden from anyone; hide one with [bold]imagebridge user exclude-study[/]")
        return
    table = Table("user", "study", "reason")
    for row in found:
        table.add_row(*row)
    console.print(table)
