"""DIMSE fixtures: a real listener on 127.0.0.1 port 0 over the ``archive`` fixture (SQLite and
PostgreSQL), real DCMTK/pynetdicom peers, and a folder of sample files in many transfer syntaxes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.dsutils import split_dataset

from imagebridge.dimse.peers import Peer
from imagebridge.dimse.server import DimseServer
from imagebridge.index.lookup import Target
from imagebridge.index.peers import PeerRecord, Peers
from imagebridge.services.archive import Archive
from tests.conftest import make_archive
from tests.samples import sample

AET = "IMAGEBRIDGE"
Listener = Callable[..., DimseServer]
SAMPLES = (
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_RLE.dcm",  # RLE lossless
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "image_dfl.dcm",  # deflated explicit VR little endian
    "ExplVR_BigEnd.dcm",  # explicit VR big endian
    "SC_rgb_rle_2frame.dcm",  # multi-frame RLE
    "rtplan.dcm",  # no pixel data, implicit VR
    "test-SR.dcm",  # structured report
)


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make system-deps)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's dataset bytes, after the file meta information (which each writer makes anew)."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def stored_dataset_bytes(archive: Archive, study: str, series: str, sop: str) -> bytes:
    [instance] = archive.lookup.instances(Target(study, series, sop))
    path = archive.blobs.path(instance.blob_key)
    assert path is not None
    return dataset_bytes(path)


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("samples")
    for name in SAMPLES:
        shutil.copy(sample(name), folder / name)
    return folder


@pytest.fixture
def dimse(archive: Archive) -> Iterator[DimseServer]:
    """The listener, accepting any caller, with timeouts short enough that silent peers are
    dropped within a test and long enough for a busy CI machine (1 and 2 s were overrun there)."""
    settings = archive.settings
    settings.allow_any_caller = True
    settings.dicom_acse_timeout = settings.dicom_network_timeout = 10.0
    settings.dicom_dimse_timeout = 10.0
    server = DimseServer(archive, host="127.0.0.1", port=0, ae_title=AET).start()
    yield server
    server.stop()


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[Archive]:
    archive = make_archive(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}")
    yield archive
    archive.close()


@pytest.fixture
def listener(lone: Archive) -> Iterator[Listener]:
    """Start the listener over ``lone`` with the given settings; tiny timeouts by default."""
    started: list[DimseServer] = []

    def start(**settings: Any) -> DimseServer:
        values = {
            "allow_any_caller": True,
            "dicom_acse_timeout": 1.0,
            "dicom_network_timeout": 1.0,
            "dicom_dimse_timeout": 5.0,
            **settings,
        }
        for name, value in values.items():
            setattr(lone.settings, name, value)
        server = DimseServer(lone, host="127.0.0.1", port=0, ae_title=AET).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def me(dimse: DimseServer) -> Peer:
    """The listener as an SCU sees it."""
    return Peer("imagebridge", AET, "127.0.0.1", dimse.port)


def add_peer(archive: Archive, name: str, aet: str, port: int, tls: bool = False) -> Peer:
    Peers(archive.engine).add(PeerRecord(name, aet, "127.0.0.1", port, tls))
    return Peer(name, aet, "127.0.0.1", port, tls)


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, errors="replace")


def pynetdicom_app(*args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "pynetdicom", *args)


class StoreScp:
    """DCMTK ``storescp`` writing into a folder: a C-MOVE destination."""

    def __init__(self, folder: Path, aet: str = "STORESCP") -> None:
        need("storescp")
        self.folder, self.aet, self.port = folder, aet, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "storescp",
                "--aetitle",
                aet,
                "--output-directory",
                str(folder),
                "--accept-all",
                "--bit-preserving",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("storescp did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    scp = StoreScp(tmp_path / "received")
    yield scp
    scp.stop()
