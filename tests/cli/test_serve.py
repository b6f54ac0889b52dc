"""`imagebridge serve` and `db upgrade` as a user starts them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from imagebridge.web.workers import STARTUP_S
from tests.cli.test_import import CLI, run_cli


@contextmanager
def served(data_dir: Path, *options: str) -> Iterator[str]:
    """``imagebridge serve`` on free ports, as a user starts it; yields its base URL once ready."""
    with serving(data_dir, *options) as (url, _process):
        yield url


@contextmanager
def serving(data_dir: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """As :func:`served`, also yielding the ``serve`` process (the supervisor with ``--workers``)."""
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--dicom-port", "0", "--data-dir", str(data_dir), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        url = None
        while url is None:
            line = process.stdout.readline()
            assert line, "serve exited before printing its DICOMweb root"
            if match := re.search(r"DICOMweb root\s+(http://127\.0\.0\.1:\d+)/dicomweb", line):
                url = match.group(1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def cli_token(data_dir: Path, scope: str = "system/ImagingStudy.cruds") -> dict[str, str]:
    """A bearer header with a token from ``imagebridge token``, as the README tells a user."""
    result = run_cli("token", "--scope", scope, "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return {"Authorization": f"Bearer {result.stdout.strip()}"}


def test_serve_on_port_zero_prints_urls_and_answers(tmp_path: Path) -> None:
    with served(tmp_path / "data") as url:
        assert httpx.get(f"{url}/healthz").text == "ok"
        assert httpx.get(f"{url}/readyz").json() == {"ready": True}
        refused = httpx.get(f"{url}/dicomweb/studies")
        assert refused.status_code == 401  # secure by default: DICOMweb needs a token
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        token = cli_token(tmp_path / "data")
        assert httpx.get(f"{url}/dicomweb/studies", headers=token).json() == []
        assert httpx.get(f"{url}/docs").status_code == 200


def test_db_upgrade_on_postgresql(database_url: str, tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", "--data-dir", str(tmp_path), "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert re.search(r"index schema at revision \w+", result.stdout)


def test_bad_settings_are_reported_plainly(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "IMAGEBRIDGE_AE_TITLE": "A_TITLE_THAT_IS_FAR_TOO_LONG",
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "200",
        },
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "AE title" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_postgresql_index_that_was_not_upgraded(tmp_path: Path) -> None:
    from tests.conftest import _temporary_pg_database

    databases = _temporary_pg_database()
    url = next(databases)
    try:
        result = run_cli("serve", "--port", "0", "--data-dir", str(tmp_path), "--database-url", url)
        assert result.returncode == 2
        assert "run 'imagebridge db upgrade'" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        databases.close()


def test_serve_with_two_workers_stores_and_finds(tmp_path: Path) -> None:
    from tests.samples import sample

    with served(tmp_path / "data", "--no-dicom", "--workers", "2") as url:
        token = cli_token(tmp_path / "data")
        body = (
            b"--b\r\nContent-Type: application/dicom\r\n\r\n"
            + sample("CT_small.dcm").read_bytes()
            + b"\r\n--b--\r\n"
        )
        headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b', **token}
        assert httpx.post(f"{url}/dicomweb/studies", content=body, headers=headers).status_code == 200
        # Whichever worker answers, it sees the same index.
        for _ in range(6):
            assert len(httpx.get(f"{url}/dicomweb/studies", headers=token).json()) == 1


def _workers_of(pid: int) -> set[int]:
    """The live child processes of ``pid`` (the HTTP workers of ``serve --workers N``)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                children.add(int(entry.name))
    return children


def test_serve_workers_restart_after_a_crash_and_stop_with_the_server(tmp_path: Path) -> None:
    with serving(tmp_path / "data", "--no-dicom", "--workers", "2") as (url, process):
        supervisor = process.pid
        workers = _workers_of(supervisor)
        assert len(workers) == 2
        time.sleep(STARTUP_S + 0.5)  # a worker dying sooner counts as one that cannot start
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _workers_of(supervisor)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the killed worker was not replaced: {now}")
        for _ in range(6):
            assert httpx.get(f"{url}/readyz").status_code == 200
        replaced = _workers_of(supervisor)
    # serving() sent SIGTERM to the supervisor and waited for it: no worker is left behind.
    assert all(not Path(f"/proc/{pid}").exists() for pid in replaced)


def test_serve_workers_that_cannot_start_stop_the_server_with_the_reason(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = ["--port", "0", "--dicom-port", str(port), "--workers", "2", "--data-dir", str(tmp_path)]
        result = subprocess.run(
            [*CLI, "serve", *options],
            capture_output=True,
            text=True,
            timeout=60,
            env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert f"cannot start the DICOM listener on port {port}" in output
    assert "stopping the server" in output
    assert "Traceback" not in output


def test_serve_lets_a_thread_hold_the_interpreter_longer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` sets the interpreter's switch interval (web/server.py says why) before it
    serves; the stand-in server records what its process runs with."""
    from typer.testing import CliRunner

    from imagebridge.cli.main import app
    from imagebridge.web import server

    seen: list[float] = []

    class Recording:
        def run(self, sockets: object) -> None:
            seen.append(sys.getswitchinterval())

    monkeypatch.setattr(server, "make_server", lambda *args, **kwargs: Recording())
    before = sys.getswitchinterval()
    try:
        result = CliRunner().invoke(
            app, ["serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--no-dicom"]
        )
    finally:
        sys.setswitchinterval(before)
    assert result.exit_code == 0, result.output
    assert seen == [pytest.approx(server.SWITCH_INTERVAL_S, abs=1e-6)] and before < server.SWITCH_INTERVAL_S
