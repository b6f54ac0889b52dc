"""FHIR search paging: ``_count``, the ``next``/``previous`` links, and ``total`` over every match."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from imagebridge.auth.server import ADMIN_POLICY
from imagebridge.auth.tokens import Grant, Tokens
from imagebridge.fhir.index import fhir_id
from imagebridge.fhir.paging import DEFAULT_COUNT, MAX_COUNT
from imagebridge.services.archive import Archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.conftest import BACKENDS, archive_per_backend
from tests.factory import make_instance, part10
from tests.fhir.test_r4_validation import medplum_errors, schema_errors

STUDIES = DEFAULT_COUNT + 5
OTHERS = 6


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], str]]:
    """A server over more studies of one patient than a default page holds, and a few other patients."""
    for archive in archive_per_backend(request.param, tmp_path_factory.mktemp(f"paging-{request.param}")):
        server = BackgroundServer(create_app(archive)).start()
        try:
            yield _fill(archive, server)
        finally:
            server.stop()


def _fill(archive: Archive, server: BackgroundServer) -> tuple[str, dict[str, str], str]:
    for number in range(STUDIES):
        ds = make_instance(PatientID="MRN-P", IssuerOfPatientID="HOSP", PatientName="Paging^Pat")
        ds.StudyDate = f"2020{1 + number % 12:02d}{1 + number % 28:02d}"
        archive.ingest.store_stream(io.BytesIO(part10(ds)))
    for number in range(OTHERS):
        ds = make_instance(
            PatientID=f"MRN-O{number}", IssuerOfPatientID="HOSP", PatientName=f"Other^O{number}"
        )
        archive.ingest.store_stream(io.BytesIO(part10(ds)))
    grant = Grant(
        "paging-test", "system/*.rs", subject="paging-test", data={"policy": ADMIN_POLICY.to_json()}
    )
    token, _ = Tokens(archive.engine).issue("access", grant, 600)
    return f"{server.url}/fhir", {"Authorization": f"Bearer {token}"}, fhir_id("MRN-P", "HOSP")


def _get(url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = httpx.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_default_page_holds_50_and_links_to_the_rest(filled: tuple[str, dict[str, str], str]) -> None:
    fhir, auth, patient = filled
    first = _get(f"{fhir}/ImagingStudy", auth, patient=patient)
    assert first["total"] == STUDIES and len(_ids(first)) == DEFAULT_COUNT
    assert _link(first, "self") == f"{fhir}/ImagingStudy?patient={patient}"
    assert _link(first, "previous") is None
    following = _link(first, "next")
    assert following is not None and following.startswith(f"{fhir}/ImagingStudy?")
    second = httpx.get(following, headers=auth).json()
    assert second["total"] == STUDIES and len(_ids(second)) == STUDIES - DEFAULT_COUNT
    assert _link(second, "next") is None and _link(second, "previous") is not None
    assert not set(_ids(first)) & set(_ids(second))


def test_walking_next_links_visits_every_study_once(filled: tuple[str, dict[str, str], str]) -> None:
    fhir, auth, patient = filled
    seen: list[str] = []
    pages = 0
    url: str | None = f"{fhir}/ImagingStudy?patient={patient}&_count=7&_include=ImagingStudy:endpoint"
    while url:
        bundle = httpx.get(url, headers=auth).json()
        assert bundle["total"] == STUDIES and len(_ids(bundle)) <= 7
        assert [
            e["resource"]["resourceType"] for e in bundle["entry"] if e["search"]["mode"] == "include"
        ] == ["Endpoint"]
        seen += _ids(bundle)
        pages += 1
        url = _link(bundle, "next")
    assert pages == -(-STUDIES // 7) and len(seen) == len(set(seen)) == STUDIES


def test_previous_link_goes_back_one_page(filled: tuple[str, dict[str, str], str]) -> None:
    fhir, auth, patient = filled
    first = _get(f"{fhir}/ImagingStudy", auth, patient=patient, _count=10)
    second = httpx.get(str(_link(first, "next")), headers=auth).json()
    back = httpx.get(str(_link(second, "previous")), headers=auth).json()
    assert _ids(back) == _ids(first)


def test_patient_search_pages_too(filled: tuple[str, dict[str, str], str]) -> None:
    fhir, auth, _patient = filled
    first = _get(f"{fhir}/Patient", auth, _count=3)
    assert first["total"] == OTHERS + 1 and len(_ids(first)) == 3
    seen = _ids(first)
    url = _link(first, "next")
    while url:
        bundle = httpx.get(url, headers=auth).json()
        seen += _ids(bundle)
        url = _link(bundle, "next")
    assert len(set(seen)) == OTHERS + 1


def test_count_zero_gives_the_total_only_and_large_counts_are_capped(
    filled: tuple[str, dict[str, str], str],
) -> None:
    fhir, auth, patient = filled
    only_total = _get(f"{fhir}/ImagingStudy", auth, patient=patient, _count=0)
    assert only_total["total"] == STUDIES and "entry" not in only_total
    assert _link(only_total, "next") is None
    capped = _get(f"{fhir}/ImagingStudy", auth, patient=patient, _count=MAX_COUNT * 10)
    assert len(_ids(capped)) == STUDIES and _link(capped, "next") is None
    beyond = _get(f"{fhir}/ImagingStudy", auth, patient=patient, _offset=STUDIES + 3)
    assert beyond["total"] == STUDIES and "entry" not in beyond


@pytest.mark.parametrize("bad", [{"_count": "ten"}, {"_count": "-1"}, {"_offset": "x"}, {"_offset": "-5"}])
def test_bad_paging_values_are_400_with_an_operation_outcome(
    filled: tuple[str, dict[str, str], str], bad: dict[str, str]
) -> None:
    fhir, auth, patient = filled
    response = httpx.get(f"{fhir}/ImagingStudy", params={"patient": patient, **bad}, headers=auth)
    assert response.status_code == 400
    outcome = response.json()
    assert (
        outcome["resourceType"] == "OperationOutcome"
        and next(iter(bad)) in outcome["issue"][0]["diagnostics"]
    )


def test_paged_bundles_are_valid_r4(filled: tuple[str, dict[str, str], str]) -> None:
    fhir, auth, patient = filled
    first = _get(f"{fhir}/ImagingStudy", auth, patient=patient, _count=4, _include="ImagingStudy:endpoint")
    middle = httpx.get(str(_link(first, "next")), headers=auth).json()
    patients = _get(f"{fhir}/Patient", auth, _count=2, _offset=2)
    bundles = [first, middle, patients]
    assert [schema_errors(b) for b in bundles] == [[], [], []]
    assert medplum_errors(bundles) == [[], [], []]
