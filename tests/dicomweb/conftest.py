"""Module-scoped servers for the WADO-RS tests: store sample data once per backend, read it many times."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import BACKENDS, archive_per_backend


@pytest.fixture(scope="module", params=BACKENDS)
def module_archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    """An archive shared by one test module (SQLite file or a fresh PostgreSQL database)."""
    yield from archive_per_backend(request.param, tmp_path_factory.mktemp(f"archive-{request.param}"))


@pytest.fixture(scope="module")
def module_url(module_archive: Archive) -> Iterator[str]:
    """The DICOMweb root of a real server over the module's archive."""
    running = BackgroundServer(create_app(module_archive)).start()
    yield f"{running.url}/dicomweb"
    running.stop()


def sample_path(name: str) -> Path:
    """A pydicom sample, from pydicom itself or pydicom-data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    assert path is not None, f"sample {name} not available"
    return Path(str(path))


def renamed(name: str) -> pydicom.Dataset:
    """Sample ``name`` with new study/series/instance UIDs, so variants of one image can coexist.

    Everything else, the pixel data included, keeps its stored form and transfer syntax."""
    ds = pydicom.dcmread(sample_path(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def store(url: str, datasets: list[pydicom.Dataset]) -> None:
    DICOMwebClient(url).store_instances(datasets)
