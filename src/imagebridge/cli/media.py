"""``imagebridge export``: write studies as an IHE PDI file set to a folder, a zip or an ISO image."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from imagebridge.cli import common
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.config import Settings
from imagebridge.errors import ImageBridgeError
from imagebridge.media import iso, pdi, preview, sources
from imagebridge.services import importer
from imagebridge.services.archive import Archive, open_archive


def install(app: typer.Typer) -> None:
    """Register ``export`` on the main command."""
    app.command("export")(export)


def export(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Where to write: FILE.zip, FILE.iso, or a folder (created; must be empty).",
            show_default=False,
        ),
    ],
    patient: Annotated[
        str | None, typer.Option("--patient", help="Export every study of this Patient ID.")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="Issuer of Patient ID, when the Patient ID is ambiguous.")
    ] = None,
    study: Annotated[
        list[str] | None, typer.Option("--study", help="A Study Instance UID to export. Repeatable.")
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="Title on README.TXT, INDEX.HTM and the ISO volume.")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Write an IHE PDI file set (DICOMDIR, DICOM files, README.TXT, INDEX.HTM) for a patient or studies.

    Examples: [bold]imagebridge export --patient MRN123 --out mrn123.iso[/];
    [bold]imagebridge export --study 1.2.3 --study 1.2.4 --out /media/usb/[/]
    """
    if (patient is None) == (not study):
        common.fail("name either --patient ID or one or more --study UID")
    if issuer is not None and patient is None:
        common.fail("--issuer goes with --patient")
    kind = _kind(out)
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    archive = _open(settings)
    try:
        uids = study or pdi.patient_studies(archive, patient or "", issuer)
        plan = pdi.plan(archive, uids, title=title)
        started = time.monotonic()
        _write(plan, kind, out)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    except OSError as exc:
        common.fail(f"cannot write {out}: {exc.strerror or exc}")
    finally:
        archive.close()
    seconds = time.monotonic() - started
    studies = sum(len(p.studies) for p in plan.patients)
    console.print(
        f"wrote {kind} [bold]{out}[/]: {_count(len(plan.patients), 'patient')}, {_count(studies, 'study')}, "
        f"{_count(plan.instance_count, 'instance')}, {plan.size / 1e6:.1f} MB in {seconds:.1f} s"
    )


def _count(n: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def _kind(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in (".zip", ".iso"):
        if out.is_dir():
            common.fail(f"{out} is a folder; name a file to write the {suffix[1:]} to")
        if not out.parent.is_dir():
            common.fail(f"the folder {out.parent} does not exist")
        return suffix[1:]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        common.fail(f"{out} exists and is not an empty folder; name a new folder, FILE.zip or FILE.iso")
    return "folder"


def _write(plan: pdi.FileSetPlan, kind: str, out: Path) -> None:
    if kind == "folder":
        plan.write_directory(out)
    elif kind == "iso":
        iso.write_iso(plan, out)
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        partial = out.with_name(out.name + ".part")
        with Progress(*columns, console=console) as progress, partial.open("wb") as fp:
            task = progress.add_task("writing zip", total=plan.size)
            for data in plan.iter_zip():
                fp.write(data)
                progress.advance(task, len(data))
        partial.replace(out)


def _open(settings: Settings) -> Archive:
    try:
        return open_archive(settings)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    except Exception as exc:  # the database may be down or the URL wrong
        common.fail(f"cannot open the index ({type(exc).__name__}): {str(exc).splitlines()[0]}")
    raise AssertionError("unreachable")


def dry_run(paths: list[Path], show_skipped: bool) -> None:
    """``import --dry-run``: the patients and studies found, read from headers; nothing is written
    (the archive is not even opened)."""
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    candidates = list(importer.discover(paths, skipped, notes))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("reading headers", total=len(candidates))
        result = preview.Preview(skipped=skipped)
        for candidate in candidates:
            preview.preview([candidate], result)
            bar.advance(task)
    table = Table(title="Would import (dry run: nothing written)")
    for column in (
        "Patient ID",
        "Issuer",
        "Name",
        "Study date",
        "Description",
        "Modalities",
        "Series",
        "Instances",
    ):
        table.add_column(column)
    for patient in result.patients.values():
        for study in patient.studies.values():
            table.add_row(
                patient.patient_id,
                patient.issuer,
                patient.name,
                study.date,
                study.description,
                ",".join(sorted(study.modalities)),
                str(len(study.series)),
                str(study.instances),
            )
    console.print(table)
    console.print(
        f"{_count(len(result.patients), 'patient')}, {_count(result.studies, 'study')}, "
        f"{_count(result.instances, 'instance')}; {_count(len(result.skipped), 'file')} would be skipped"
    )
    print_skipped_by_reason(result.skipped, notes)
    if show_skipped:
        for name, reason in result.skipped:
            console.print(f"[dim]skipped[/] {name}: {reason}")


def print_skipped_by_reason(skipped: list[tuple[str, str]], notes: list[str]) -> None:
    """How many files were left out for each kind of reason, and the notes about DICOMDIRs."""
    for note in notes:
        console.print(f"[cyan]note[/] {note}")
    if not skipped:
        return
    table = Table(title="Skipped, by reason", show_header=False)
    for kind, count in Counter(sources.skip_kind(reason) for _, reason in skipped).most_common():
        table.add_row(kind, str(count))
    console.print(table)
