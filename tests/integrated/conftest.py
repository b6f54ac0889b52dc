"""Two imagebridge processes: one plays the EHR (authorization server + clinical FHIR), one the imaging server.

The EHR knows patients A and B by MRN under its assigning authority ``urn:oid:1.2.3.4.5``; the
imaging archive holds their images with Issuer of Patient ID ``HOSP`` (so the two servers'
Patient ids differ, and only the MRN mapping can join them): SA1 and SA2 of A, SB1 of B.
Both servers are started with ``imagebridge serve --port 0`` as a user would.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from pydicom.uid import generate_uid

from imagebridge.auth.assertions import ASSERTION_TYPE
from imagebridge.auth.clients import ALL, AccessGrant, Client, ClientKind, Clients
from imagebridge.auth.tokens import Grant, Tokens
from imagebridge.auth.users import Role, Users
from imagebridge.config import Settings
from imagebridge.fhir.index import fhir_id
from imagebridge.services.archive import open_archive
from tests.factory import make_instance, part10

EHR_AUTHORITY = "1.2.3.4.5"
IMAGING_ISSUER = "HOSP"
APP = "viewer-app"
IMAGING_CLIENT = "imaging-server"
PACS_READER = "pacs-reader"
CACHE_SECONDS = 2
SERVE = [sys.executable, "-m", "imagebridge", "serve", "--port", "0", "--no-dicom"]
APP_SCOPE = "launch/patient openid fhirUser patient/ImagingStudy.rs patient/Patient.rs"


@dataclass
class Process:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve(data_dir: Path, *options: str) -> Iterator[Process]:
    """``imagebridge serve --port 0`` in its own process; yields once it answers /readyz."""
    log = data_dir.parent / f"{data_dir.name}.log"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("IMAGEBRIDGE_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*SERVE, "--data-dir", str(data_dir), *options],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        url = _wait_for_url(proc, log)
        yield Process(url, proc, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 90
    url = None
    while time.monotonic() < deadline:
        if url is None and (
            match := re.search(r"DICOMweb root\s+(http://127\.0\.0\.1:\d+)/dicomweb", log.read_text())
        ):
            url = match.group(1)
        if url is not None:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"serve did not become ready:\n{log.read_text()}")


@dataclass
class Setup:
    ehr: Process
    imaging: Process
    ehr_dir: Path
    imaging_dir: Path
    a: str
    """A's Patient id at the EHR."""
    b: str
    a_key: str
    """A's Patient id in the imaging archive (a different issuer, so a different id)."""
    b_key: str
    sa1: str
    sa2: str
    sb1: str
    imaging_key: RSAKey
    reader_key: ECKey

    @property
    def fhir(self) -> str:
        return f"{self.imaging.url}/fhir"

    @property
    def dicomweb(self) -> str:
        return f"{self.imaging.url}/dicomweb"

    def ehr_tokens(self) -> Tokens:
        settings = Settings(data_dir=self.ehr_dir)
        return Tokens(_engine(settings))

    def app_token(self, patient: str | None = None, *, scope: str = APP_SCOPE, lifetime: int = 3600) -> str:
        """An access token the EHR issued to the viewer app for a patient user (as its /token would)."""
        patient = patient or self.a
        grant = Grant(APP, scope, patient, f"Patient/{patient}", f"user-{patient[:6]}")
        token, _ = self.ehr_tokens().issue("access", grant, lifetime)
        return token

    def backend_token(self, client_id: str, key: RSAKey | ECKey, alg: str, scope: str) -> str:
        """SMART Backend Services at the EHR: client_credentials with a joserfc-signed assertion."""
        token_url = f"{self.ehr.url}/oauth/token"
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        }
        assertion = jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])
        response = httpx.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from imagebridge.index import db

    return db.make_engine(settings.effective_database_url)


def store(data_dir: Path, datasets: list, database_url: str | None = None) -> None:  # type: ignore[type-arg]
    archive = open_archive(Settings(data_dir=data_dir, database_url=database_url))
    try:
        for ds in datasets:
            archive.ingest.store_stream(io.BytesIO(part10(ds)))
    finally:
        archive.close()


def person(study: str, mrn: str, issuer: str, name: str, **attrs: str):  # type: ignore[no-untyped-def]
    return make_instance(study=study, PatientID=mrn, IssuerOfPatientID=issuer, PatientName=name, **attrs)


def prepare_ehr(ehr_dir: Path, imaging_key: RSAKey, reader_key: ECKey) -> tuple[str, str]:
    """The EHR: its own records of A and B (an X-ray each), users, the app, and two backend clients."""
    store(
        ehr_dir,
        [
            person(generate_uid(), "MRN-A", EHR_AUTHORITY, "Alpha^Ann", PatientBirthDate="19800101"),
            person(generate_uid(), "MRN-B", EHR_AUTHORITY, "Beta^Bob", PatientBirthDate="19700202"),
        ],
    )
    a, b = fhir_id("MRN-A", EHR_AUTHORITY), fhir_id("MRN-B", EHR_AUTHORITY)
    engine = _engine(Settings(data_dir=ehr_dir))
    clients = Clients(engine)
    clients.add(Client(APP, "Imaging viewer", ClientKind.PUBLIC, ("http://127.0.0.1:9/callback",)))
    imaging_jwks = {"keys": [{**imaging_key.as_dict(private=False), "alg": "RS384"}]}
    clients.add(
        Client(
            IMAGING_CLIENT,
            "The imaging server",
            ClientKind.CONFIDENTIAL_ASYMMETRIC,
            jwks=imaging_jwks,
            scope="system/Patient.rs",
            policy=AccessGrant(ALL, ALL),
        )
    )
    reader_jwks = {"keys": [{**reader_key.as_dict(private=False), "alg": "ES384"}]}
    clients.add(
        Client(
            PACS_READER,
            "A reporting service",
            ClientKind.CONFIDENTIAL_ASYMMETRIC,
            jwks=reader_jwks,
            scope="system/ImagingStudy.rs system/Patient.rs",
            policy=AccessGrant(ALL, ALL),
        )
    )
    users = Users(engine)
    users.add("ann", "correct horse battery", Role.PATIENT, display_name="Ann Alpha", patients=(a,))
    users.add("bob", "correct horse battery", Role.PATIENT, display_name="Bob Beta", patients=(b,))
    engine.dispose()
    return a, b


def prepare_imaging(imaging_dir: Path, sa1: str, sa2: str, sb1: str, database_url: str | None = None) -> None:
    """The imaging archive: A's two studies and B's one; the reporting service may see SA1 only."""
    store(
        imaging_dir,
        [
            person(sa1, "MRN-A", IMAGING_ISSUER, "Alpha^Ann", StudyDate="20240101"),
            person(sa2, "MRN-A", IMAGING_ISSUER, "Alpha^Ann", StudyDate="20240202"),
            person(sb1, "MRN-B", IMAGING_ISSUER, "Beta^Bob", StudyDate="20240303"),
        ],
        database_url,
    )
    engine = _engine(Settings(data_dir=imaging_dir, database_url=database_url))
    policy = AccessGrant((fhir_id("MRN-A", IMAGING_ISSUER),), (sa1,))
    Clients(engine).add(
        Client(
            PACS_READER,
            "A reporting service",
            ClientKind.PUBLIC,
            scope="system/ImagingStudy.rs",
            policy=policy,
        )
    )
    engine.dispose()


def write_config(path: Path, ehr_url: str, key_file: Path, **extra: object) -> Path:
    lines = [
        "[ehr]",
        f'fhir_base = "{ehr_url}/fhir"',
        f'client_id = "{IMAGING_CLIENT}"',
        f'private_key_file = "{key_file}"',
        f"cache_seconds = {CACHE_SECONDS}",
        "negative_cache_seconds = 1",
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "[ehr.issuers]",
        f'"urn:oid:{EHR_AUTHORITY}" = "{IMAGING_ISSUER}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="package")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("integrated")
    imaging_key = RSAKey.generate_key(2048, auto_kid=True)
    reader_key = ECKey.generate_key("P-384", auto_kid=True)
    key_file = root / "imaging-server-key.json"
    key_file.write_text(json.dumps(imaging_key.as_dict(private=True)))
    ehr_dir, imaging_dir = root / "ehr", root / "imaging"
    a, b = prepare_ehr(ehr_dir, imaging_key, reader_key)
    sa1, sa2, sb1 = generate_uid(), generate_uid(), generate_uid()
    prepare_imaging(imaging_dir, sa1, sa2, sb1)
    with serve(ehr_dir) as ehr:
        config = write_config(root / "imaging.toml", ehr.url, key_file)
        with serve(imaging_dir, "--config", str(config)) as imaging:
            yield Setup(
                ehr,
                imaging,
                ehr_dir,
                imaging_dir,
                a,
                b,
                fhir_id("MRN-A", IMAGING_ISSUER),
                fhir_id("MRN-B", IMAGING_ISSUER),
                sa1,
                sa2,
                sb1,
                imaging_key,
                reader_key,
            )
