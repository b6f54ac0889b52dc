"""``imagebridge``: serve the archive, import files, manage the index."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imagebridge.cli import access, auth, common, dicom, media, peer, reconcile, share
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.config import Settings
from imagebridge.errors import ImageBridgeError
from imagebridge.media import batch
from imagebridge.services import importer
from imagebridge.services.archive import Archive, open_archive

if TYPE_CHECKING:
    from imagebridge.dimse.server import DimseServer
    from imagebridge.services.reconcile import SourceImport

app = typer.Typer(
    name="imagebridge",
    help="A DICOM archive and exchange node: DICOMweb, DIMSE, FHIR ImagingStudy, SMART on FHIR.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the index database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(peer.app, name="peer")
app.add_typer(dicom.app, name="dicom")
auth.install(app)
access.install(app)
media.install(app)
reconcile.install(app)
share.install(app)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (0 picks a free one).")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
    load_samples: Annotated[
        bool, typer.Option("--load-samples", help="Import pydicom's sample files on first start.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every stored instance.")] = False,
    dicom_port: Annotated[
        int | None,
        typer.Option("--dicom-port", help="DICOM (DIMSE) port; default 11112, 0 picks a free one."),
    ] = None,
    aet: Annotated[str | None, typer.Option("--aet", help="Our AE title; default IMAGEBRIDGE.")] = None,
    no_dicom: Annotated[bool, typer.Option("--no-dicom", help="Do not start the DICOM listener.")] = False,
    allow_any_caller: Annotated[
        bool, typer.Option("--allow-any-caller", help="Accept DICOM calls from AE titles that are not peers.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="HTTP worker processes (default 1; the number of cores for throughput)."
        ),
    ] = None,
) -> None:
    """Start the archive: DICOMweb at /dicomweb, API docs at /docs, DICOM listener on port 11112."""
    from imagebridge.cli import samples
    from imagebridge.web import workers as http_workers
    from imagebridge.web.app import create_app
    from imagebridge.web.server import bind, make_server, serving_process

    common.setup_logging(verbose)
    settings = common.settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        dicom_port=dicom_port,
        ae_title=aet,
        dicom_enabled=False if no_dicom else None,
        allow_any_caller=True if allow_any_caller else None,
        http_workers=workers,
    )
    # An embedded index is upgraded in place; a shared PostgreSQL index is upgraded
    # deliberately with `imagebridge db upgrade`, not by whichever worker starts first.
    archive = _open(settings, upgrade=settings.embedded_index)
    if load_samples:
        samples.load_once(archive)
    demo = samples.demo_users(archive) if load_samples else None
    serving_process()
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        common.fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    base = f"http://{settings.host}:{sock.getsockname()[1]}"
    console.print(f"[bold green]imagebridge[/] is serving [bold]{settings.data_dir.resolve()}[/]")
    console.print(f"  DICOMweb root  {base}/dicomweb    e.g. {base}/dicomweb/studies")
    console.print(f"  API docs       {base}/docs")
    console.print(f"  health         {base}/healthz")
    if demo is not None:
        samples.print_demo(demo, base, settings.data_dir)
    if settings.http_workers > 1:
        console.print(f"  HTTP workers   {settings.http_workers} processes")
        console.print("Press Ctrl+C to stop.")
        # The workers open their own archive; nothing may run beside the fork.
        archive.close()
        try:
            status = http_workers.run(settings, sock, first_worker=_dicom_in_worker)
        except http_workers.CannotFork as exc:
            common.fail(f"{exc}; start with --workers 1")
            return
        if status:
            raise typer.Exit(status)
        return
    listener = _start_dicom(archive)
    console.print("Press Ctrl+C to stop.")
    try:
        make_server(create_app(archive)).run(sockets=[sock])
    finally:
        if listener is not None:
            listener.stop()
        archive.close()


def _dicom_in_worker(archive: Archive) -> Callable[[], None] | None:
    """Worker 0 of ``serve --workers N`` runs the DICOM listener (it must run once)."""
    try:
        listener = _start_dicom(archive)
    except typer.Exit as exc:  # the error line is printed; the worker ends with its status
        raise SystemExit(exc.exit_code) from None
    return listener.stop if listener is not None else None


def _start_dicom(archive: Archive) -> DimseServer | None:
    """The DICOM listener, non-blocking beside uvicorn (``cli/dicom.py`` and ``dimse/`` hold the rest)."""
    from imagebridge.dimse.server import DimseServer

    settings = archive.settings
    if not settings.dicom_enabled:
        return None
    logging.getLogger("imagebridge.dimse").setLevel(logging.INFO)
    try:
        listener = DimseServer(archive).start()
    except (OSError, ImageBridgeError) as exc:
        common.fail(f"cannot start the DICOM listener on port {settings.dicom_port}: {exc}")
    tls = f", DICOM TLS on port {listener.tls_port}" if listener.tls_port else ""
    console.print(f"  DICOM          {listener.ae_title} at {listener.host}:{listener.port}{tls}")
    return listener


def _open(settings: Settings, *, upgrade: bool = True) -> Archive:
    try:
        return open_archive(settings, upgrade=upgrade)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    except Exception as exc:  # the database may be down or the URL wrong
        common.fail(f"cannot open the index ({type(exc).__name__}): {str(exc).splitlines()[0]}")
    raise AssertionError("unreachable")


@app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files, folders (searched recursively), discs or folders with a DICOMDIR, zip archives "
            "and ISO images."
        ),
    ],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
    show_skipped: Annotated[bool, typer.Option("--show-skipped", help="List every skipped file.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every stored instance.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="List the patients and studies that would be imported; write nothing."
        ),
    ] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Outside studies from this source ('imagebridge source list'): each patient is reconciled "
            "to a local one, uncertain matches wait in 'imagebridge review list'.",
        ),
    ] = None,
) -> None:
    """Load DICOM files into the archive, with a progress bar and a closing summary.

    A disc (or a copy of one) is read through its DICOMDIR; viewer programs and other files on it
    are skipped and listed by kind. [bold]--dry-run[/] shows what would be imported first.
    """
    common.setup_logging(verbose)
    if dry_run:
        media.dry_run(paths, show_skipped)
        return
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    archive = _open(settings)
    reconciling = _source_import(archive, source) if source else None
    summary = importer.Summary()
    notes: list[str] = []
    candidates = list(importer.discover(paths, summary.skipped, notes))
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("importing", total=len(candidates))
        batch.import_all(
            archive.ingest, candidates, summary, source=reconciling, advance=lambda: progress.advance(task)
        )
    _audit_import(archive, summary, paths, source)
    archive.close()
    _print_summary(summary, time.monotonic() - started, show_skipped)
    media.print_skipped_by_reason(summary.skipped, notes)
    if summary.refused and not summary.stored and not summary.already_present:
        raise typer.Exit(1)


def _audit_import(archive: Archive, summary: importer.Summary, paths: list[Path], source: str | None) -> None:
    """One ``import`` record per study in the access log (``/fhir/AuditEvent``, the patient's
    "who saw my images"), made durable before the command ends."""
    from imagebridge.audit.store import AuditStore

    try:
        importer.audit_import(
            archive.engine,
            summary,
            actor=f"cli:{common.os_user()}",
            origin="cli",
            medium=", ".join(str(p) for p in paths),
            source=source,
            decisions=summary.decisions,
        )
        AuditStore.of(archive.engine).flush()
    except Exception as exc:  # the images are in; say loudly that the log is not
        console.print(
            f"[red]the import was not recorded in the access log ({type(exc).__name__}): "
            f"{str(exc).splitlines()[0] if str(exc) else ''}[/]"
        )


def _source_import(archive: Archive, name: str) -> SourceImport:
    from imagebridge.services.reconcile import SourceImport, Sources, reconciler_for

    reconciler = reconciler_for(archive)
    try:
        return SourceImport(reconciler, Sources(reconciler.records, archive.settings).get(name))
    except ImageBridgeError as exc:
        archive.close()
        common.fail(exc.reason)
    raise AssertionError("unreachable")


def _print_summary(summary: importer.Summary, seconds: float, show_skipped: bool) -> None:
    table = Table(title="Import summary", show_header=False)
    table.add_row("stored", str(summary.stored))
    if summary.decisions:
        table.add_row("waiting for review", str(summary.waiting_review))
    table.add_row("already present", str(summary.already_present))
    table.add_row("refused", str(len(summary.refused)))
    table.add_row("skipped (not DICOM or unreadable)", str(len(summary.skipped)))
    table.add_row("studies touched", str(len(summary.studies)))
    rate = (summary.stored + summary.already_present) / seconds if seconds > 0 else 0.0
    table.add_row(
        "time",
        f"{seconds:.1f} s ({rate:.0f} instances/s, {summary.bytes / max(seconds, 1e-9) / 1e6:.1f} MB/s)",
    )
    console.print(table)
    for study_uid, decision in summary.decisions.items():
        console.print(f"study {study_uid}: {decision}")
    for name, reason in summary.refused:
        console.print(f"[yellow]refused[/] {name}: {reason}")
    if show_skipped:
        for name, reason in summary.skipped:
            console.print(f"[dim]skipped[/] {name}: {reason}")
    elif summary.skipped:
        console.print(f"[dim]{len(summary.skipped)} files skipped; --show-skipped lists them[/]")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None) -> None:
    """Create or upgrade the index schema to the latest revision."""
    from imagebridge.index import db

    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.effective_database_url)
    try:
        db.upgrade(engine)
        console.print(f"index schema at revision [bold]{db.current_revision(engine)}[/]")
    except Exception as exc:
        common.fail(f"upgrade failed ({type(exc).__name__}): {str(exc).splitlines()[0]}")
    finally:
        engine.dispose()


def main() -> None:
    app()
