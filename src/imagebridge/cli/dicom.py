"""``imagebridge dicom``: talk DIMSE to a peer — echo, find, move, get, send — with progress bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imagebridge.cli import common
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.cli.peer import directory
from imagebridge.dicom.matching import Level
from imagebridge.dimse import scu
from imagebridge.dimse.peers import Peer
from imagebridge.errors import ImageBridgeError

app = typer.Typer(help="Act as a DICOM client (SCU) towards a peer.", no_args_is_help=True)

PeerArg = Annotated[
    str, typer.Argument(help="A peer name (`imagebridge peer list`), its AE title, or AET@HOST:PORT.")
]
CallingAet = Annotated[
    str | None, typer.Option("--aet", help="Our (calling) AE title; default from settings.")
]
Keys = Annotated[
    list[str] | None,
    typer.Option("--key", "-k", help="Keyword=value to match, or Keyword to return, e.g. -k PatientID=123."),
]
LevelOpt = Annotated[Level, typer.Option("--level", "-L", help="Query/Retrieve level.", case_sensitive=False)]
Model = Annotated[str, typer.Option("--model", "-m", help="Information model: study or patient root.")]


@contextmanager
def _session(
    peer_text: str, aet: str | None, data_dir: Path | None, database_url: str | None, config: Path | None
) -> Iterator[tuple[scu.Scu, Peer]]:
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    try:
        peer = directory(settings).resolve(peer_text)
        yield scu.Scu(settings, aet), peer
    except ImageBridgeError as exc:
        common.fail(exc.reason)


def _bar(description: str) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=False)


def _check_model(model: str) -> str:
    if model not in ("study", "patient"):
        common.fail("--model is 'study' or 'patient'")
    return model


@app.command()
def echo(
    peer: PeerArg,
    aet: CallingAet = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Verify that the peer answers (C-ECHO)."""
    with _session(peer, aet, data_dir, database_url, config) as (client, remote):
        status = client.echo(remote)
    if status != 0:
        common.fail(f"C-ECHO answered status 0x{status:04X}", 1)
    console.print(f"[green]C-ECHO ok[/]: {remote.describe()}")


@app.command()
def find(
    peer: PeerArg,
    level: LevelOpt = Level.STUDY,
    key: Keys = None,
    model: Model = "study",
    aet: CallingAet = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Query the peer (C-FIND) and print a table of the matches."""
    with _session(peer, aet, data_dir, database_url, config) as (client, remote):
        query = scu.identifier(level, key or [])
        matches = list(client.find(remote, query, model=_check_model(model)))
    shown = [e for e in query if e.keyword not in ("QueryRetrieveLevel",)]
    table = Table(*(e.keyword or str(e.tag) for e in shown), title=f"{len(matches)} matches")
    for match in matches:
        table.add_row(*(str(match.get(e.tag).value if e.tag in match else "") for e in shown))
    console.print(table)


@app.command()
def move(
    peer: PeerArg,
    dest: Annotated[str, typer.Option("--dest", help="AE title of the destination, as the peer knows it.")],
    level: LevelOpt = Level.STUDY,
    key: Keys = None,
    model: Model = "study",
    aet: CallingAet = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Ask the peer to send matching instances to a destination AE (C-MOVE), e.g. to this archive."""
    with _session(peer, aet, data_dir, database_url, config) as (client, remote), _bar("moving") as bar:
        task = bar.add_task(f"C-MOVE to {dest}", total=None)
        query = scu.identifier(level, key or [], defaults=False)
        result = client.move(
            remote,
            query,
            dest,
            model=_check_model(model),
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    _report(result, "moved")


@app.command()
def get(
    peer: PeerArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the received files into.")] = Path(
        "."
    ),
    level: LevelOpt = Level.STUDY,
    key: Keys = None,
    model: Model = "study",
    aet: CallingAet = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Fetch matching instances from the peer over the same association (C-GET) into a folder."""
    with _session(peer, aet, data_dir, database_url, config) as (client, remote), _bar("getting") as bar:
        task = bar.add_task("C-GET", total=None)
        query = scu.identifier(level, key or [], defaults=False)
        result = client.get(
            remote,
            query,
            out,
            model=_check_model(model),
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    _report(result, f"received into {out}")


@app.command()
def send(
    peer: PeerArg,
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (searched recursively).")],
    aet: CallingAet = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Send DICOM files to the peer (C-STORE), each in its own transfer syntax, bytes as on disk."""
    files = _files(paths)
    with _session(peer, aet, data_dir, database_url, config) as (client, remote), _bar("sending") as bar:
        task = bar.add_task(f"C-STORE to {remote.ae_title}", total=len(files))
        result = client.send(remote, files, progress=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"sent {result.sent} of {len(files)} files")
    for name, reason in result.failed:
        console.print(f"[yellow]failed[/] {name}: {reason}")
    if result.failed:
        raise typer.Exit(1)


RETRIEVE_STATUS = {
    0x0000: "done",
    0xA701: "the peer is out of resources and could not count the matches",
    0xA702: "every sub-operation failed",
    0xA801: "the peer does not know the destination AE title; configure it there first",
    0xA900: "the peer could not read the identifier",
    0xB000: "some sub-operations failed",
    0xFE00: "cancelled",
    0xFFFF: "the peer sent no final answer",
}
"""Final C-MOVE/C-GET statuses (PS3.4 Tables C.4-2 and C.4-3) in words."""


def _report(result: scu.RetrieveResult, verb: str) -> None:
    meaning = RETRIEVE_STATUS.get(result.status, "failed" if result.status >= 0xA000 else "")
    console.print(
        f"{result.completed} {verb}, {result.failed} failed, {result.warning} with warnings "
        f"(status 0x{result.status:04X}{': ' + meaning if meaning else ''})"
    )
    if not result.ok:
        raise typer.Exit(1)


def _files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            common.fail(f"{path}: no such file or folder")
    return found
