"""``imagebridge peer``: the remote DICOM AEs this archive talks to and accepts calls from."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from imagebridge.cli import common
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.config import Settings
from imagebridge.dimse.peers import PeerDirectory
from imagebridge.errors import ImageBridgeError
from imagebridge.index.peers import PeerRecord, Peers

app = typer.Typer(
    help="Remote DICOM AEs: who may call in (C-STORE, C-FIND, ...) and where C-MOVE may send.",
    no_args_is_help=True,
)


def directory(settings: Settings) -> PeerDirectory:
    """The peers of the settings file and of the index (created or upgraded if needed)."""
    return PeerDirectory(settings, Peers(common.open_index(settings)))


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A short name to refer to the peer by, e.g. 'ct1' or 'pacs'.")],
    aet: Annotated[str, typer.Option("--aet", help="The peer's AE title.")],
    host: Annotated[str, typer.Option("--host", help="The peer's host name or address.")],
    port: Annotated[int, typer.Option("--port", help="The peer's DICOM port.", min=1, max=65535)],
    tls: Annotated[bool, typer.Option("--tls", help="Talk to the peer with DICOM TLS.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Add a peer: it may then call this archive, and be a C-MOVE destination."""
    peers = directory(common.settings(config, data_dir=data_dir, database_url=database_url))
    try:
        peers.add(PeerRecord(name, aet.strip(), host, port, tls))
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"added peer [bold]{name}[/]: {aet} at {host}:{port}{' (TLS)' if tls else ''}")


@app.command("list")
def list_(data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None) -> None:
    """List the configured peers, from the index and the settings file."""
    peers = directory(common.settings(config, data_dir=data_dir, database_url=database_url)).all()
    if not peers:
        console.print(
            "no peers yet; add one with [bold]imagebridge peer add NAME --aet AET --host HOST --port PORT[/]"
        )
        return
    table = Table("name", "AE title", "host", "port", "TLS", "from")
    for peer in peers:
        table.add_row(
            peer.name, peer.ae_title, peer.host, str(peer.port), "yes" if peer.tls else "", peer.source
        )
    console.print(table)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The peer's name, as `peer list` shows it.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Remove a peer added with `peer add` (peers of the settings file are edited there)."""
    peers = directory(common.settings(config, data_dir=data_dir, database_url=database_url))
    if peers.repository is None:
        common.fail("the index is not open")
    try:
        peers.repository.remove(name)  # type: ignore[union-attr]
    except ImageBridgeError as exc:
        extra = " (it comes from the settings file)" if name in peers.settings.dicom_peers else ""
        common.fail(exc.reason + extra)
    console.print(f"removed peer [bold]{name}[/]")
