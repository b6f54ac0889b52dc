"""DIMSE rows with DCMTK as the peer: C-STORE in with ``dcmsend``, C-MOVE out to a ``storescp``."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bench import dicomweb
from bench.servers import DicomPeer, Server, free_port, tool_env

TOOLS = ("dcmsend", "movescu", "storescp")
CALLING_AET = "BENCHSCU"
DESTINATION_AET = "STORESCP"
TIMEOUT_S = 600.0


class DimseFailed(RuntimeError):
    """A DCMTK tool failed or the server did not end up with the expected instances."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class StoreScp:
    """The bench's C-MOVE destination: ``storescp`` writing into a folder, on a free port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peer = DicomPeer(DESTINATION_AET, free_port())
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StoreScp:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            "storescp",
            "--aetitle",
            self.peer.aet,
            "--unique-filenames",
            "--output-directory",
            str(self.folder),
            str(self.peer.port),
        ]
        with (self.folder.parent / "storescp.log").open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=tool_env()
            )
        time.sleep(0.3)
        if self._proc.poll() is not None:
            raise DimseFailed(f"storescp exited with {self._proc.returncode}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def received(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.is_file())


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=tool_env())
    except subprocess.TimeoutExpired as exc:
        raise DimseFailed(f"{cmd[0]} did not finish within {TIMEOUT_S:.0f}s") from exc
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [""]
        raise DimseFailed(f"{cmd[0]} exited {out.returncode}: {tail[0][:120]}")
    return seconds


def _peer(server: Server) -> tuple[str, str]:
    if server.aet is None or server.dicom_port is None:
        raise DimseFailed(f"{server.name} has no DICOM listener")
    return server.aet, str(server.dicom_port)


def _instances_in_study(server: Server, study_uid: str) -> int:
    with dicomweb.client(server.auth) as http:
        return len(dicomweb.qido(http, f"{server.web_root}/studies/{study_uid}/instances", {}))


def send(server: Server, folder: Path, study_uid: str, count: int) -> dict[str, float]:
    """C-STORE the folder's files with ``dcmsend`` (one association), then check they all arrived."""
    aet, port = _peer(server)
    seconds = _run(
        ["dcmsend", "-aet", CALLING_AET, "-aec", aet, "127.0.0.1", port, "--scan-directories", str(folder)]
    )
    stored = _instances_in_study(server, study_uid)
    if stored != count:
        raise DimseFailed(f"dcmsend stored {stored} of {count} instances")
    return {"inst/s": count / seconds}


def move(server: Server, scp: StoreScp, study_uid: str, count: int) -> dict[str, float]:
    """C-MOVE the study to the bench's storescp with ``movescu``; all instances must arrive."""
    aet, port = _peer(server)
    before = scp.received()
    seconds = _run(
        [
            "movescu",
            "-aet",
            CALLING_AET,
            "-aec",
            aet,
            "-aem",
            scp.peer.aet,
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            port,
        ]
    )
    arrived = scp.received() - before
    if arrived != count:
        raise DimseFailed(f"C-MOVE delivered {arrived} of {count} instances")
    return {"inst/s": count / seconds}
