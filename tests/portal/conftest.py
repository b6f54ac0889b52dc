"""A running archive with sample studies of two patients and one account of every role."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from fastapi import FastAPI
from pydicom.data import get_testdata_file

from imagebridge.auth.users import Role, Users
from imagebridge.fhir.index import fhir_id
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import archive_per_backend

PASSWORD = "correct horse battery"
ANNA = {"PatientID": "PAT-ANNA", "PatientName": "Example^Anna", "PatientBirthDate": "19800214"}
BOB = {"PatientID": "PAT-BOB", "PatientName": "Other^Bob", "PatientBirthDate": "19700101"}
# Anna's studies: every kind the viewer must draw (name -> what it exercises).
ANNA_FILES = {
    "CT_small.dcm": "CT, uncompressed",
    "examples_ybr_color.dcm": "US, 30 frames, JPEG baseline colour",
    "JPEG2000.dcm": "NM, JPEG 2000",
    "emri_small_jpeg_ls_lossless.dcm": "MR, 10 frames, JPEG-LS",
    "MR_small_RLE.dcm": "MR, RLE",
    "SC_rgb.dcm": "secondary capture, RGB colour",
}
BOB_FILES = {"US1_J2KR.dcm": "US, JPEG 2000 lossless"}


@dataclass
class Site:
    archive: Archive
    server: BackgroundServer
    anna_studies: dict[str, str] = field(default_factory=dict)
    """sample file name -> Study Instance UID"""
    bob_studies: dict[str, str] = field(default_factory=dict)
    sr_study: str = ""
    app: FastAPI | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def anna_patient(self) -> str:
        return fhir_id(ANNA["PatientID"], "")


def _store(archive: Archive, name: str, person: dict[str, str], study: str | None = None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file(name))
        for key, value in person.items():
            setattr(ds, key, value)
        if study:
            ds.StudyInstanceUID = study
        if not ds.get("StudyDate"):
            ds.StudyDate = "20240102"
        if not ds.get("StudyDescription"):
            ds.StudyDescription = f"Sample {name.removesuffix('.dcm')}"
        buffer = io.BytesIO()
        ds.save_as(buffer)
    buffer.seek(0)
    archive.ingest.store_stream(buffer)
    return str(ds.StudyInstanceUID)


def load(archive: Archive) -> Site:
    site = Site(archive=archive, server=None)  # type: ignore[arg-type]
    for name in ANNA_FILES:
        site.anna_studies[name] = _store(archive, name, ANNA)
    for name in BOB_FILES:
        site.bob_studies[name] = _store(archive, name, BOB)
    site.sr_study = _store(archive, "test-SR.dcm", ANNA, study=site.anna_studies["CT_small.dcm"])
    users = Users(archive.engine)
    users.add("anna", PASSWORD, Role.PATIENT, display_name="Anna Example", patients=(site.anna_patient,))
    bob = fhir_id(BOB["PatientID"], "")
    users.add("carer", PASSWORD, Role.PROXY, display_name="Chris Carer", patients=(site.anna_patient, bob))
    users.add("dr.grey", PASSWORD, Role.CLINICIAN, display_name="Dr Meredith Grey")
    users.add("admin", PASSWORD, Role.ADMIN, display_name="Site Administrator")
    return site


def start_site(backend: str, tmp: Path, **settings: object) -> Iterator[Site]:
    for archive in archive_per_backend(backend, tmp, dicomweb_anonymous=False, **settings):
        site = load(archive)
        site.app = create_app(archive)
        site.server = BackgroundServer(site.app).start()
        try:
            yield site
        finally:
            site.server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """A fresh site per test, on each index backend."""
    yield from start_site(request.param, tmp_path)


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One SQLite site for a module of browser tests (sessions differ per test; data does not)."""
    yield from start_site("sqlite", tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def viewer_ready() -> None:
    """OHIF must be installed (``make viewer``, part of ``make install``); fail, never skip, if not."""
    from imagebridge.portal.viewer import default_dir

    if not (default_dir() / "index.html").is_file():
        pytest.fail(f"the OHIF viewer is not installed in {default_dir()}: run `make viewer`", pytrace=False)
