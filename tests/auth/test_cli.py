"""`imagebridge client|user|token` as an administrator runs them, then the results used over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey

from imagebridge.config import Settings
from imagebridge.fhir.index import fhir_id
from imagebridge.services.archive import open_archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.auth.helpers import assertion, bearer
from tests.factory import make_instance, part10

CLI = [sys.executable, "-m", "imagebridge"]


def run(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "IMAGEBRIDGE_DATA_DIR": str(data)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env, input=stdin)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory holding one study of patient MRN-A (issuer HOSP), imported with the CLI."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(part10(make_instance(PatientID="MRN-A", IssuerOfPatientID="HOSP")))
    data = tmp_path / "data"
    assert run(data, "import", str(folder)).returncode == 0
    return data


def test_user_add_and_list(data: Path) -> None:
    added = run(
        data,
        "user",
        "add",
        "ann",
        "--role",
        "patient",
        "--patient",
        "HOSP|MRN-A",
        "--name",
        "Ann",
        "--password",
        "a long password",
    )
    assert added.returncode == 0, added.stderr
    listed = run(data, "user", "list")
    assert "ann" in listed.stdout and fhir_id("MRN-A", "HOSP") in listed.stdout
    prompted = run(
        data, "user", "add", "drx", "--role", "clinician", stdin="another password\nanother password\n"
    )
    assert prompted.returncode == 0, prompted.stderr
    assert "(all)" in run(data, "user", "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["user", "add", "x", "--role", "patient", "--password", "a long password"],
            "needs at least one patient",
        ),
        (
            ["user", "add", "x", "--role", "patient", "--patient", "MRN-Z", "--password", "a long password"],
            "no patient",
        ),
        (["user", "add", "x", "--role", "admin", "--password", "short"], "at least 8"),
        (["token", "--scope", "patient/ImagingStudy.rs"], "need --patient"),
        (["token", "--scope", "patient/ImagingStudy.bogus"], "not a SMART scope"),
        (["token", "--scope", "user/ImagingStudy.rs"], "signed-in user"),
        (["client", "add", "app"], "redirect_uris"),
        (["client", "remove", "nobody"], "no client"),
    ],
)
def test_mistakes_are_explained(data: Path, args: list[str], message: str) -> None:
    result = run(data, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_client_add_list_remove_and_backend_services(data: Path, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False) | {"kid": key.kid}]}))
    added = run(
        data,
        "client",
        "add",
        "ai",
        "--name",
        "AI",
        "--jwks",
        str(jwks),
        "--scope",
        "system/ImagingStudy.rs",
        "--patient",
        "MRN-A",
    )
    assert added.returncode == 0, added.stderr
    assert run(data, "client", "add", "viewer", "--redirect-uri", "http://127.0.0.1:9/cb").returncode == 0
    listed = run(data, "client", "list").stdout
    assert (
        "ai" in listed and "confidential-asymmetric" in listed and "viewer" in listed and "public" in listed
    )
    with _server(data) as base:
        form = {
            "grant_type": "client_credentials",
            "scope": "system/ImagingStudy.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(key, "ai", f"{base}/oauth/token"),
        }
        token = httpx.post(f"{base}/oauth/token", data=form).json()["access_token"]
        found = httpx.get(
            f"{base}/fhir/ImagingStudy", params={"patient": fhir_id("MRN-A", "HOSP")}, headers=bearer(token)
        )
        assert found.status_code == 200 and found.json()["total"] == 1
        assert run(data, "client", "remove", "ai").returncode == 0
        gone = httpx.get(
            f"{base}/fhir/ImagingStudy", params={"patient": fhir_id("MRN-A", "HOSP")}, headers=bearer(token)
        )
        assert gone.status_code == 401, "a removed client's tokens stop working at once"


def test_token_command(data: Path) -> None:
    system = run(data, "token", "--scope", "system/ImagingStudy.rs", "--lifetime", "60")
    assert system.returncode == 0, system.stderr
    patient = run(data, "token", "--scope", "patient/ImagingStudy.rs", "--patient", "MRN-A")
    assert patient.returncode == 0, patient.stderr
    a = fhir_id("MRN-A", "HOSP")
    with _server(data) as base:
        for printed in (system.stdout, patient.stdout):
            response = httpx.get(
                f"{base}/fhir/ImagingStudy", params={"patient": a}, headers=bearer(printed.strip())
            )
            assert response.status_code == 200 and response.json()["total"] == 1
        introspected = httpx.post(
            f"{base}/oauth/introspect",
            data={"token": patient.stdout.strip()},
            headers=bearer(system.stdout.strip()),
        ).json()
        assert introspected["active"] is True and introspected["patient"] == a
        assert introspected["exp"] - introspected["iat"] == 3600


class _server:
    def __init__(self, data: Path) -> None:
        self.archive = open_archive(Settings(data_dir=data))
        self.running = BackgroundServer(create_app(self.archive))

    def __enter__(self) -> str:
        return self.running.start().url

    def __exit__(self, *_exc: object) -> None:
        self.running.stop()
        self.archive.close()
