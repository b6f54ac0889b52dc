"""``imagebridge source``, ``review`` and ``purge-outside``: outside studies and their patients.

An import with ``--source NAME`` reconciles each study's patient to a local one (see
``services/reconcile.py``); uncertain matches wait in the review queue that ``review`` works on.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from imagebridge.cli import common
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.config import Settings
from imagebridge.errors import ImageBridgeError
from imagebridge.reconcile.records import Case, Records
from imagebridge.services.archive import Archive, open_archive
from imagebridge.services.reconcile import Decision, Reconciler, Sources, parse_age, reconciler_for

source_app = typer.Typer(
    help="Sources of outside studies (another hospital, a clinic): the issuer of their Patient IDs.",
    no_args_is_help=True,
)
review_app = typer.Typer(
    help="The review queue: imported studies whose patient match was uncertain.", no_args_is_help=True
)

By = Annotated[
    str | None, typer.Option("--by", help="Who decides, for the audit log (default: your login name).")
]


def install(app: typer.Typer) -> None:
    """Register ``source``, ``review`` and ``purge-outside`` on the main command."""
    app.add_typer(source_app, name="source")
    app.add_typer(review_app, name="review")
    app.command("purge-outside")(purge_outside)


@contextmanager
def _archive(settings: Settings) -> Iterator[Archive]:
    try:
        archive = open_archive(settings, upgrade=settings.embedded_index)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    except Exception as exc:  # the database may be down or the URL wrong
        common.fail(f"cannot open the index ({type(exc).__name__}): {str(exc).splitlines()[0]}")
    try:
        yield archive
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    finally:
        archive.close()


def _sources(settings: Settings) -> Sources:
    return Sources(Records(common.open_index(settings)), settings)


@source_app.command("add")
def source_add(
    name: Annotated[str, typer.Argument(help="A short name, e.g. 'north' (used with import --source).")],
    issuer: Annotated[
        str, typer.Option("--issuer", help="Issuer of Patient ID for this source's IDs, e.g. 'NORTH-HOSP'.")
    ],
    accession_prefix: Annotated[
        str | None,
        typer.Option(
            "--accession-prefix", help="Up to 8 of A-Z 0-9 - _; default: the name's first 4 and '-'."
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Add a source of outside studies."""
    sources = _sources(common.settings(config, data_dir=data_dir, database_url=database_url))
    try:
        sources.add(name, issuer, accession_prefix)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"added source [bold]{name}[/] (issuer {issuer}); import with [bold]--source {name}[/]")


@source_app.command("list")
def source_list(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None
) -> None:
    """List the sources, from the index and the settings file."""
    sources = _sources(common.settings(config, data_dir=data_dir, database_url=database_url)).all()
    if not sources:
        console.print("no sources yet; add one with [bold]imagebridge source add NAME --issuer ISSUER[/]")
        return
    table = Table("name", "issuer", "accession prefix", "from")
    for s in sources:
        table.add_row(
            s.name, s.issuer, s.accession_prefix or "(default)", "settings" if s.configured else "index"
        )
    console.print(table)


@source_app.command("remove")
def source_remove(
    name: str, data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None
) -> None:
    """Remove a source (studies already imported from it stay, marked as outside studies)."""
    try:
        _sources(common.settings(config, data_dir=data_dir, database_url=database_url)).remove(name)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"removed source [bold]{name}[/]")


@review_app.command("list")
def review_list(
    all_: Annotated[bool, typer.Option("--all", help="Also decided cases, not only those waiting.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """The cases waiting for a decision, with the score and the suggested patient."""
    records = Records(
        common.open_index(common.settings(config, data_dir=data_dir, database_url=database_url))
    )
    cases = records.cases(state=None if all_ else "pending")
    if not cases:
        console.print("the review queue is empty" if not all_ else "no reconciliation cases yet")
        return
    table = Table("case", "state", "source", "incoming patient", "suggested", "score", "study", "instances")
    for case in cases:
        i = case.incoming
        table.add_row(
            str(case.pk),
            case.state if case.decided_by is None else f"{case.state} by {case.decided_by}",
            case.source,
            f"{i['name']} {i['birth_date']} {i['sex']} ({case.source_patient_id})",
            case.candidate[0] if case.candidate else "",
            f"{case.score:g}" if case.score is not None else case.method,
            case.study_uid,
            str(records.count_instances(case.pk)),
        )
    console.print(table)
    if not all_:
        console.print("decide with [bold]imagebridge review accept|link|new CASE[/]")


def _decide(
    case: int, decision: Decision, by: str | None, settings: Settings, patient: tuple[str, str] | None = None
) -> None:
    with _archive(settings) as archive:
        reconciler: Reconciler = reconciler_for(archive)
        decided: Case = reconciler.decide(case, decision, by or f"cli:{getpass.getuser()}", patient)
    console.print(f"case {case}: {decided.summary()}")


@review_app.command("accept")
def review_accept(
    case: int,
    by: By = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Link the study to the suggested patient."""
    _decide(case, "accept", by, common.settings(config, data_dir=data_dir, database_url=database_url))


@review_app.command("link")
def review_link(
    case: int,
    patient_id: Annotated[str, typer.Option("--patient-id", help="The local patient's Patient ID.")],
    issuer: Annotated[str, typer.Option("--issuer", help="Its Issuer of Patient ID ('' if none).")] = "",
    by: By = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Link the study to another local patient than the suggested one."""
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    _decide(case, "link", by, settings, (patient_id, issuer))


@review_app.command("new")
def review_new(
    case: int,
    by: By = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """File the study under a new local patient (the source's qualified Patient ID)."""
    _decide(case, "new-patient", by, common.settings(config, data_dir=data_dir, database_url=database_url))


def purge_outside(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Age like 90d, 12w, 6m, 1y; default: reconciliation.outside_retention_days."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; delete nothing.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Delete outside (imported) studies past their retention; local studies are never touched."""
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    try:
        age = parse_age(older_than or f"{settings.reconciliation.outside_retention_days}d")
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    with _archive(settings) as archive:
        due = reconciler_for(archive).purge_outside(age, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for study in due:
        console.print(
            f"{verb} {study.study_uid} (from {study.source}, imported {study.imported_at:%Y-%m-%d})"
        )
    console.print(f"{verb} {len(due)} outside studies imported more than {age.days} days ago")
