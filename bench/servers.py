"""Start and stop the two servers under test, each on free loopback ports in its own temp dir.

Both are started in a new session so a Ctrl-C in the terminal reaches only the harness, which then
stops them itself (SIGTERM, then SIGKILL after a grace period) in its ``finally`` block.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
ORTHANC_PLUGINS = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/share/orthanc/plugins/libOrthancGdcm.so"),
)
ORTHANC_INSTALL_HINT = "apt-get install -y orthanc orthanc-dicomweb orthanc-gdcm dcmtk"
APT_LOG = Path("/tmp/apt.log")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
TOKEN_SCOPE = "system/*.cruds"
TOKEN_LIFETIME_S = 86400


class ServerError(RuntimeError):
    """A server could not be started or answered its liveness probe wrongly."""


@dataclass
class Server:
    """One running server: where its DICOMweb root is and how to stop it."""

    name: str
    web_root: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    aet: str | None = None
    dicom_port: int | None = None
    notes: list[str] = field(default_factory=list)
    auth: dict[str, str] = field(default_factory=dict)
    """Headers every DICOMweb request to this server carries (imagebridge's bearer token)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the server, wait, then SIGKILL its own process group if it is still there."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class DicomPeer:
    """A DIMSE destination the servers must know for C-MOVE (the bench's storescp)."""

    aet: str
    port: int
    host: str = "127.0.0.1"


def free_port() -> int:
    """Ask the kernel for a free loopback port by binding port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_problem() -> str | None:
    """Why Orthanc cannot run here (with the install command), or None when it can."""
    missing = ", ".join(str(p) for p in (ORTHANC_BIN, *ORTHANC_PLUGINS) if not p.exists())
    if not missing:
        return None
    apt = ""
    if APT_LOG.exists():
        last = (APT_LOG.read_text(errors="replace").strip().splitlines() or [""])[-1]
        apt = f" (an apt run is logging to {APT_LOG}; its last line is {last!r})"
    return f"Orthanc is not installed: missing {missing}{apt}.\nInstall it with:  {ORTHANC_INSTALL_HINT}"


def orthanc_version() -> str:
    try:
        out = subprocess.run([str(ORTHANC_BIN), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout.splitlines() or ["unknown"])[0].replace("/usr/sbin/Orthanc", "Orthanc").strip()


def orthanc_config(
    workdir: Path, http_port: int, dicom_port: int, peer: DicomPeer | None
) -> dict[str, object]:
    """The TESTING.md recipe, plus the bench's storescp as a C-MOVE destination."""
    config: dict[str, object] = {
        "Name": "BENCH",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "db"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True,
        "Plugins": [str(p) for p in ORTHANC_PLUGINS],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
        "StorageCompression": False,
        "HttpThreadsCount": 50,
        "SaveJobs": False,
    }
    if peer is not None:
        config["DicomModalities"] = {"storescp": [peer.aet, peer.host, peer.port]}
    return config


def start_orthanc(workdir: Path, peer: DicomPeer | None) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(orthanc_config(workdir, http_port, dicom_port, peer), indent=2))
    log_path = workdir / "orthanc.log"
    proc = _spawn([str(ORTHANC_BIN), str(config_path)], log_path, workdir)
    server = Server(
        "Orthanc",
        f"http://127.0.0.1:{http_port}/dicom-web",
        proc,
        workdir,
        log_path,
        aet="ORTHANC",
        dicom_port=dicom_port,
    )
    _wait_ready(server, f"http://127.0.0.1:{http_port}/system")
    return server


@dataclass(frozen=True)
class ImagebridgeCli:
    """What the installed ``imagebridge`` command offers, read from its ``--help``."""

    exe: Path
    serve: bool
    no_dicom: bool
    dimse: bool
    peer_add: bool

    @property
    def dimse_problem(self) -> str | None:
        if not self.serve:
            return "`imagebridge serve` is not available yet"
        if not self.dimse:
            return "`imagebridge serve` has no --dicom-port/--aet options yet"
        if not self.peer_add:
            return "`imagebridge peer add` is not available yet"
        return None


def probe_imagebridge(exe: Path) -> ImagebridgeCli:
    serve_help = _help_text([str(exe), "serve", "--help"])
    peer_help = _help_text([str(exe), "peer", "add", "--help"])
    return ImagebridgeCli(
        exe=exe,
        serve=serve_help is not None and "--port" in serve_help,
        no_dicom=serve_help is not None and "--no-dicom" in serve_help,
        dimse=serve_help is not None and "--dicom-port" in serve_help and "--aet" in serve_help,
        peer_add=peer_help is not None and "--aet" in peer_help,
    )


def imagebridge_add_peers(cli: ImagebridgeCli, data_dir: Path, peers: list[DicomPeer]) -> str | None:
    """Register the bench's AEs (callers and the C-MOVE destination); returns an error text or None."""
    for peer in peers:
        cmd = [
            str(cli.exe),
            "peer",
            "add",
            peer.aet.lower(),
            "--aet",
            peer.aet,
            "--host",
            peer.host,
            "--port",
            str(peer.port),
            "--data-dir",
            str(data_dir),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_cli_env())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`imagebridge peer add` failed: {exc}"
        if out.returncode != 0:
            return (
                f"`imagebridge peer add` exited {out.returncode}: {(out.stderr or out.stdout).strip()[-200:]}"
            )
    return None


def start_imagebridge(cli: ImagebridgeCli, workdir: Path, with_dimse: bool, workers: int = 1) -> Server:
    """Start ``imagebridge serve`` on a fresh data dir (SQLite default), per the bench contract,
    with ``workers`` HTTP worker processes."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    base = [
        str(cli.exe),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(http_port),
        "--data-dir",
        str(data_dir),
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    dicom_port: int | None = None
    if with_dimse:
        dicom_port = free_port()
        args = [*base, "--dicom-port", str(dicom_port), "--aet", "IMAGEBRIDGE"]
    else:
        args = [*base, "--no-dicom"] if cli.no_dicom else base
    log_path = workdir / "imagebridge.log"
    proc = _spawn(args, log_path, workdir)
    server = Server(
        "imagebridge",
        f"http://127.0.0.1:{http_port}/dicomweb",
        proc,
        workdir,
        log_path,
        aet="IMAGEBRIDGE" if with_dimse else None,
        dicom_port=dicom_port,
    )
    if not with_dimse and not cli.no_dicom:
        server.notes.append("serve has no --no-dicom option; started without it")
    if workers > 1:
        server.notes.append(
            f"imagebridge serves HTTP with {workers} worker processes (`serve --workers {workers}`)"
        )
    _wait_ready(server, f"http://127.0.0.1:{http_port}/healthz")
    try:
        server.auth = {"Authorization": f"Bearer {issue_token(cli, data_dir)}"}
    except BaseException:
        server.stop()
        raise
    return server


def issue_token(cli: ImagebridgeCli, data_dir: Path) -> str:
    """A bearer token from the bench server's own authorization server (``imagebridge token``).

    ``system/*.cruds`` from the CLI client reaches every patient and study (its policy is the
    administrator's, all patients and all studies), so every workload can store, search and read
    with the same token checks a real deployment makes on each request.
    """
    cmd = [
        str(cli.exe),
        "token",
        "--scope",
        TOKEN_SCOPE,
        "--lifetime",
        str(TOKEN_LIFETIME_S),
        "--data-dir",
        str(data_dir),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_cli_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"`imagebridge token` failed: {exc}") from exc
    token = out.stdout.strip()
    if out.returncode != 0 or not token or any(c.isspace() for c in token):
        raise ServerError(
            f"`imagebridge token` exited {out.returncode}: {(out.stderr or out.stdout).strip()[-200:]}"
        )
    return token


def _spawn(args: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            env=_cli_env(),
        )


def _wait_ready(server: Server, url: str) -> None:
    """Poll ``url`` until 200; a server that never gets there (or a Ctrl-C meanwhile) is stopped."""
    try:
        _poll_until_ready(server, url)
    except BaseException:
        server.stop()
        raise


def _poll_until_ready(server: Server, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise ServerError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise ServerError(f"{server.name} did not answer 200 on {url} within {READY_TIMEOUT_S:.0f}s")


def _help_text(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_cli_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout + out.stderr if out.returncode == 0 else None


def tool_env() -> dict[str, str]:
    """Environment for DCMTK-based processes (Orthanc, dcmsend, movescu, storescp).

    Debian's DCMTK leaves Nagle's algorithm on unless ``TCP_NODELAY=1``; with it on, every C-STORE
    waits ~40 ms for a delayed ACK on loopback, which would measure the kernel, not the servers.
    """
    return {**os.environ, "TCP_NODELAY": "1"}


def _cli_env() -> dict[str, str]:
    """imagebridge is measured with its token checks on, whatever the caller's environment says."""
    env = {**tool_env(), "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    env.pop("IMAGEBRIDGE_DICOMWEB_ANONYMOUS", None)
    return env
