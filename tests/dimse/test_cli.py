"""``imagebridge peer`` and ``imagebridge dicom`` run as a user runs them: in a shell, against a
real listener; output readable, errors one clear line, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pydicom

from imagebridge.dimse.server import DimseServer
from imagebridge.services.archive import Archive
from tests.dimse.conftest import AET, Listener, StoreScp, add_peer, dataset_bytes

CT = "CT_small.dcm"


class Cli:
    """The installed console script, with its own data folder (where its peers are kept)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.script = Path(sys.executable).parent / "imagebridge"

    def __call__(self, *args: str, code: int = 0) -> str:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        done = subprocess.run(
            [str(self.script), *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        output = done.stdout + done.stderr
        assert "Traceback" not in output, output
        assert done.returncode == code, f"{args}: exit {done.returncode}\n{output}"
        return output


def test_peer_commands(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli")
    assert "no peers yet; add one with" in cli("peer", "list")
    assert "added peer pacs: PACS at 10.0.0.5:104" in cli(
        "peer", "add", "pacs", "--aet", "PACS", "--host", "10.0.0.5", "--port", "104"
    )
    listing = cli("peer", "list")
    assert "pacs" in listing and "PACS" in listing and "10.0.0.5" in listing
    assert "is not an AE title" in cli(
        "peer", "add", "x", "--aet", "A-TITLE-LONGER-THAN-16", "--host", "h", "--port", "1", code=2
    )
    assert "removed peer pacs" in cli("peer", "remove", "pacs")
    assert "error: no peer named 'pacs'" in cli("peer", "remove", "pacs", code=2)


def test_dicom_commands_against_the_listener(
    lone: Archive, listener: Listener, sample_folder: Path, tmp_path: Path
) -> None:
    # A CLI process (imports, file reads) can leave more than the fixture's 1 s between PDUs on a
    # loaded machine; CI once saw the listener time the association out mid-send.
    server: DimseServer = listener(dicom_dimse_timeout=20.0, dicom_network_timeout=20.0)
    cli = Cli(tmp_path / "cli")
    cli("peer", "add", "archive", "--aet", AET, "--host", "127.0.0.1", "--port", str(server.port))
    assert "C-ECHO ok" in cli("dicom", "echo", "archive")
    count = len(list(sample_folder.iterdir()))
    assert f"sent {count} of {count} files" in cli("dicom", "send", "archive", str(sample_folder))
    ct = pydicom.dcmread(sample_folder / CT, stop_before_pixels=True)
    found = cli("dicom", "find", "archive", "-L", "SERIES", "-k", f"StudyInstanceUID={ct.StudyInstanceUID}",
                "-k", "SeriesInstanceUID", "-k", "Modality")  # fmt: skip
    assert "1 matches" in found and ct.SeriesInstanceUID in found
    out = tmp_path / "got"
    got = cli("dicom", "get", "archive", "-k", f"StudyInstanceUID={ct.StudyInstanceUID}", "-o", str(out))
    assert "1 received into" in got
    assert dataset_bytes(out / f"{ct.SOPInstanceUID}.dcm") == dataset_bytes(sample_folder / CT)
    nowhere = cli("dicom", "move", "archive", "--dest", "NOWHERE",
                  "-k", f"StudyInstanceUID={ct.StudyInstanceUID}", code=1)  # fmt: skip
    assert "0xA801: the peer does not know the destination AE title" in nowhere
    destination = StoreScp(tmp_path / "moved")
    try:
        add_peer(lone, "storescp", destination.aet, destination.port)
        moved = cli("dicom", "move", "archive", "--dest", destination.aet,
                    "-k", f"StudyInstanceUID={ct.StudyInstanceUID}")  # fmt: skip
    finally:
        destination.stop()
    assert "1 moved, 0 failed" in moved and len(destination.files()) == 1
    assert "error: no peer named 'nosuch' (known: archive)" in cli("dicom", "echo", "nosuch", code=2)
    assert "could not be reached" in cli("dicom", "echo", "NOBODY@127.0.0.1:1", code=2)
    assert "is neither a DICOM keyword" in cli("dicom", "find", "archive", "-k", "Nonsense=1", code=2)


def test_serve_listens_for_configured_peers_only(tmp_path: Path) -> None:
    """The README's flow: add a peer, start `serve`, the peer is let in and a stranger is not."""
    cli = Cli(tmp_path / "data")
    cli("peer", "add", "workstation", "--aet", "WORKSTATION", "--host", "127.0.0.1", "--port", "104")
    serve = subprocess.Popen(
        [str(cli.script), "serve", "--port", "0", "--dicom-port", "0", "--data-dir", str(cli.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    try:
        assert serve.stdout is not None
        address = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            line = serve.stdout.readline()
            if match := re.search(r"DICOM\s+(\S+) at (127\.0\.0\.1:\d+)", line):
                address = f"{match.group(1)}@{match.group(2)}"
        assert address, "serve did not print its DICOM address"
        assert "C-ECHO ok" in cli("dicom", "echo", address, "--aet", "WORKSTATION")
        assert "rejected the association" in cli("dicom", "echo", address, "--aet", "STRANGER", code=2)
    finally:
        serve.terminate()
        serve.wait(timeout=20)
