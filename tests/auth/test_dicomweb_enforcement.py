"""DICOMweb enforcement (smart-imaging-access.md §2.5-2.7; §4 scenarios 19-25, 27, 28) on a real server.

Tokens come from the real authorization server (sign-in and consent pages, backend services);
the server has ``dicomweb_anonymous`` off, as a default-settings server has.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from requests import HTTPError

from imagebridge.config import Settings
from imagebridge.index import access
from imagebridge.index.lookup import Target
from imagebridge.services.archive import open_archive
from imagebridge.web.app import create_app
from imagebridge.web.server import BackgroundServer
from tests.auth.helpers import backend_token, bearer
from tests.auth.secured import Secured, secured_world
from tests.conftest import BACKENDS
from tests.factory import make_instance, multipart, part10, stow_type

A_SCOPE = "launch/patient patient/ImagingStudy.cruds"
STORE_FAILED = "00081198"
STORED = "00081199"


@pytest.fixture(scope="module", params=BACKENDS)
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from secured_world(request.param, tmp_path_factory.mktemp(f"secured-{request.param}"))


def _route_urls(schema: dict[str, Any], base: str, uids: dict[str, str]) -> list[tuple[str, str]]:
    """Every DICOMweb operation of the OpenAPI description, with HEAD beside each retrieval
    (QIDO-RS, the paths ending in a resource name, answers GET only)."""
    found = []
    for path, operations in schema["paths"].items():
        if not path.startswith("/dicomweb"):
            continue
        for method in operations:
            found.append((method.upper(), base + path.format(**uids)))
            if method == "get" and not path.endswith(("/studies", "/series", "/instances")):
                found.append(("HEAD", base + path.format(**uids)))
    return found


def test_a_default_settings_server_answers_401_on_every_dicomweb_route(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'i.sqlite3'}")
    assert settings.dicomweb_anonymous is False
    archive = open_archive(settings)
    app = create_app(archive)
    running = BackgroundServer(app).start()
    try:
        uids = {
            "study": "1.2.3",
            "series": "1.2.3.4",
            "instance": "1.2.3.4.5",
            "frame_list": "1",
            "tag_path": "7FE00010",
        }
        routes = _route_urls(app.openapi(), running.url, uids)
        assert len(routes) >= 50, routes  # every QIDO, WADO, rendered, thumbnail, bulk, STOW, DELETE route
        for method, url in routes:
            response = httpx.request(method, url, headers={"Accept": "*/*"})
            assert response.status_code == 401, (method, url, response.text)
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="imagebridge"', (method, url)
            if method != "HEAD":
                assert response.json()["status"] == 401
    finally:
        running.stop()
        archive.close()


def test_cors_preflight_needs_no_token_and_allows_the_authorization_header(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'i.sqlite3'}",
        cors_origins=["https://viewer.example"],
    )
    archive = open_archive(settings)
    running = BackgroundServer(create_app(archive)).start()
    try:
        response = httpx.options(
            f"{running.url}/dicomweb/studies/1.2.3",
            headers={
                "Origin": "https://viewer.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert response.status_code == 200
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        refused = httpx.get(f"{running.url}/dicomweb/studies", headers={"Origin": "https://viewer.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://viewer.example"
        assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    finally:
        running.stop()
        archive.close()


def _parts(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    pieces = response.content.split(b"--" + boundary.encode())[1:-1]
    return [piece.split(b"\r\n\r\n", 1)[1][:-2] for piece in pieces]


def test_scenario_19_full_study_with_dicomweb_client_and_a_bearer_token(secured: Secured) -> None:
    world = secured.world
    token = secured.patient_token(A_SCOPE)
    client = DICOMwebClient(secured.dicomweb, headers=bearer(token))
    found = client.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in found} == {world.sa1, world.sa2}
    metadata = client.retrieve_study_metadata(world.sa1)
    assert {m["00100020"]["Value"][0] for m in metadata} == {"MRN-A"} and len(metadata) == 2
    raw = httpx.get(
        f"{secured.dicomweb}/studies/{world.sa1}",
        headers={
            **bearer(token),
            "Accept": "multipart/related; type=application/dicom; transfer-syntax=*",
        },
    )
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("multipart/related")
    datasets = [pydicom.dcmread(io.BytesIO(part), force=True) for part in _parts(raw)]
    assert len(datasets) == 2
    for ds in datasets:
        assert ds.StudyInstanceUID == world.sa1 and ds.PatientID == "MRN-A"
    head = httpx.head(f"{secured.dicomweb}/studies/{world.sa1}", headers=bearer(token))
    assert head.status_code == 200 and head.content == b""
    assert httpx.head(f"{secured.dicomweb}/studies/{world.sb1}", headers=bearer(token)).status_code == 403
    with pytest.raises(HTTPError) as refused:
        client.retrieve_study_metadata(world.sb1)
    assert refused.value.response.status_code == 403


def test_missing_malformed_unknown_expired_and_revoked_tokens_are_401(secured: Secured) -> None:
    url = f"{secured.dicomweb}/studies/{secured.world.sa1}/metadata"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="imagebridge"'
    cases = {
        "malformed": {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
        "empty": {"Authorization": "Bearer"},
        "garbage": bearer("random-garbage-token"),
        "expired": bearer(secured.expired(secured.patient_token(A_SCOPE))),
        "revoked": bearer(secured.revoked(secured.patient_token(A_SCOPE))),
    }
    for name, headers in cases.items():
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401, name
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="imagebridge", error="invalid_token", error_description="')
        assert "MRN-A" not in response.text


def test_scenario_15_a_token_without_imaging_scope_is_403_insufficient_scope(secured: Secured) -> None:
    token = secured.patient_token("launch/patient patient/Observation.rs")
    for url in (f"{secured.dicomweb}/studies", f"{secured.dicomweb}/studies/{secured.world.sa1}"):
        response = httpx.get(url, headers=bearer(token))
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    for scope in ("patient/*.rs", "patient/*.read", "patient/ImagingStudy.rs", "patient/ImagingStudy.read"):
        token = secured.patient_token(f"launch/patient {scope}")
        response = httpx.get(
            f"{secured.dicomweb}/studies/{secured.world.sa1}/metadata", headers=bearer(token)
        )
        assert response.status_code == 200, scope


def _study_uids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["0020000D"]["Value"][0] for item in response.json()]


def test_qido_is_filtered_in_sql_so_limit_and_offset_count_visible_studies(secured: Secured) -> None:
    world = secured.world
    ann = bearer(secured.patient_token(A_SCOPE))
    # A post-filtered first page (of every patient's studies) would miss B's study unless it came first.
    bob = bearer(secured.patient_token(A_SCOPE, username="parent", patient=world.b))
    assert _study_uids(httpx.get(f"{secured.dicomweb}/studies?limit=1", headers=bob)) == [world.sb1]
    assert _study_uids(httpx.get(f"{secured.dicomweb}/studies?offset=1", headers=bob)) == []
    everything = _study_uids(httpx.get(f"{secured.dicomweb}/studies", headers=ann))
    assert sorted(everything) == sorted([world.sa1, world.sa2])
    pages = [httpx.get(f"{secured.dicomweb}/studies?limit=1&offset={n}", headers=ann) for n in (0, 1, 2)]
    assert [_study_uids(page) for page in pages] == [everything[:1], everything[1:], []]
    for level in ("series", "instances"):
        found = _study_uids(httpx.get(f"{secured.dicomweb}/{level}", headers=ann))
        assert set(found) == {world.sa1, world.sa2}
    for nested in (f"studies/{world.sb1}/series", f"studies/{world.sb1}/instances"):
        assert httpx.get(f"{secured.dicomweb}/{nested}", headers=ann).json() == []
    asked = httpx.get(f"{secured.dicomweb}/studies?PatientID=MRN-B", headers=ann)
    assert asked.json() == []


def test_scenario_28_a_system_client_allowed_only_sa1(secured: Secured) -> None:
    world = secured.world
    token = bearer(backend_token(world))
    assert _study_uids(httpx.get(f"{secured.dicomweb}/studies", headers=token)) == [world.sa1]
    assert httpx.get(f"{secured.dicomweb}/studies/{world.sa1}/metadata", headers=token).status_code == 200
    for study in (world.sa2, world.sb1):
        response = httpx.get(f"{secured.dicomweb}/studies/{study}", headers=token)
        assert response.status_code == 403 and study not in response.text
    unknown = httpx.get(f"{secured.dicomweb}/studies/{generate_uid()}", headers=token)
    assert unknown.status_code == 403  # the same answer as for B's study: existence is not told


def test_a_caller_who_reaches_everything_gets_404_for_what_is_not_there(secured: Secured) -> None:
    admin = bearer(secured.patient_token("user/ImagingStudy.cruds", username="root"))
    missing = httpx.get(f"{secured.dicomweb}/studies/{generate_uid()}/metadata", headers=admin)
    assert missing.status_code == 404


def test_stow_with_a_patient_token_stores_her_instances_and_refuses_others(secured: Secured) -> None:
    world = secured.world
    token = secured.patient_token(A_SCOPE)
    mine = make_instance(study=world.sa2, PatientID="MRN-A", IssuerOfPatientID="HOSP", SeriesNumber=9)
    theirs = make_instance(study=world.sb1, PatientID="MRN-B", IssuerOfPatientID="HOSP")
    intruder = make_instance(study=world.sb1, PatientID="MRN-A", IssuerOfPatientID="HOSP")
    body = multipart([part10(mine), part10(theirs), part10(intruder)])
    response = httpx.post(
        f"{secured.dicomweb}/studies",
        content=body,
        headers={**bearer(token), "Content-Type": stow_type()},
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert [i["00081155"]["Value"][0] for i in answer[STORED]["Value"]] == [mine.SOPInstanceUID]
    failed = {i["00081155"]["Value"][0]: i["00081197"]["Value"][0] for i in answer[STORE_FAILED]["Value"]}
    assert failed == {theirs.SOPInstanceUID: 0x0124, intruder.SOPInstanceUID: 0x0124}
    for refused in (theirs, intruder):
        with pytest.raises(Exception, match="not in the archive"):
            secured.archive.lookup.instances(Target(world.sb1, refused.SeriesInstanceUID))
    assert world.sb1 not in response.text and "MRN-B" not in response.text
    admin = bearer(secured.patient_token("user/ImagingStudy.cruds", username="root"))
    url = f"{secured.dicomweb}/studies/{world.sa2}/series/{mine.SeriesInstanceUID}"
    assert httpx.delete(url, headers=admin).status_code == 200


def test_stow_decides_once_per_patient_and_study_in_a_request(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    """Hundreds of slices of one study are one decision and one audit record, not one each;
    every refused instance is still refused."""
    world = secured.world
    series = generate_uid()
    mine = [
        make_instance(study=world.sa2, series=series, PatientID="MRN-A", IssuerOfPatientID="HOSP")
        for _ in range(3)
    ]
    intruders = [
        make_instance(study=world.sb1, PatientID="MRN-A", IssuerOfPatientID="HOSP") for _ in range(2)
    ]
    body = multipart([part10(ds) for ds in [*mine, *intruders]])
    with caplog.at_level(logging.INFO, logger="imagebridge.audit"):
        response = httpx.post(
            f"{secured.dicomweb}/studies",
            content=body,
            headers={**bearer(secured.patient_token(A_SCOPE)), "Content-Type": stow_type()},
        )
    assert response.status_code == 202, response.text
    failed = {i["00081155"]["Value"][0] for i in response.json()[STORE_FAILED]["Value"]}
    assert failed == {ds.SOPInstanceUID for ds in intruders}
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "imagebridge.audit"]
    creates = [(r["outcome"], r["study"]) for r in records if r["interaction"] == "create" and r.get("study")]
    assert sorted(creates) == sorted([("allow", world.sa2), ("deny", world.sb1)])


def test_delete_is_for_administrators_only(secured: Secured) -> None:
    world = secured.world
    admin = bearer(secured.patient_token("user/ImagingStudy.cruds", username="root"))
    study = generate_uid()
    client = DICOMwebClient(secured.dicomweb, headers=admin)
    client.store_instances([make_instance(study=study, PatientID="MRN-A", IssuerOfPatientID="HOSP")])
    url = f"{secured.dicomweb}/studies/{study}"
    patient = httpx.delete(url, headers=bearer(secured.patient_token(A_SCOPE)))
    assert patient.status_code == 403
    clinician = httpx.delete(url, headers=bearer(secured.patient_token("user/ImagingStudy.cruds", "drx")))
    assert clinician.status_code == 403
    reader = httpx.delete(url, headers=bearer(secured.patient_token("user/ImagingStudy.rs", "root")))
    assert reader.status_code == 403 and 'error="insufficient_scope"' in reader.headers["WWW-Authenticate"]
    assert httpx.get(f"{url}/metadata", headers=admin).status_code == 200
    deleted = httpx.delete(url, headers=admin)
    assert deleted.status_code == 200 and deleted.json()["instances"] == 1
    assert httpx.delete(url, headers=admin).status_code == 404
    assert httpx.get(f"{secured.dicomweb}/studies/{world.sa1}/metadata", headers=admin).status_code == 200


def test_scenario_25_one_restricted_series_refuses_the_whole_study(secured: Secured) -> None:
    world = secured.world
    proxy = bearer(secured.patient_token(A_SCOPE, username="parent", patient=world.a))
    ann = bearer(secured.patient_token(A_SCOPE))
    clinician = bearer(secured.patient_token("user/ImagingStudy.rs", username="drx"))
    admin = bearer(secured.patient_token("user/ImagingStudy.rs", username="root"))
    study = f"{secured.dicomweb}/studies/{world.sa1}"
    assert httpx.get(study, headers=proxy).status_code == 200
    access.restrict(secured.archive.engine, secured.a_series, "sensitive", "patient request", by="test")
    try:
        for url in (study, f"{study}/metadata", f"{study}/series/{secured.a_series}", f"{study}/rendered"):
            refused = httpx.get(url, headers=proxy)
            assert refused.status_code == 403, url
            assert world.sa1 not in refused.text
            assert httpx.get(url, headers=clinician).status_code == 403, url
        assert _study_uids(httpx.get(f"{secured.dicomweb}/studies", headers=proxy)) == [world.sa2]
        # The other series of SA1 is not restricted: found and retrieved on its own, never with SA1 whole.
        other = [s for s in secured.a_series_all if s != secured.a_series]
        for search in (f"{secured.dicomweb}/series?StudyInstanceUID={world.sa1}", f"{study}/series"):
            found = httpx.get(search, headers=proxy).json()
            assert [item["0020000E"]["Value"][0] for item in found] == other
        assert httpx.get(f"{study}/series/{other[0]}", headers=proxy).status_code == 200
        for allowed in (ann, admin):
            assert httpx.get(study, headers=allowed).status_code == 200
            assert world.sa1 in _study_uids(httpx.get(f"{secured.dicomweb}/studies", headers=allowed))
        fhir = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=proxy)
        assert fhir.status_code == 200
        listed = [e["resource"]["id"] for e in fhir.json().get("entry", [])]
        assert world.sa1 not in json.dumps(listed) and len(listed) == 1
        assert httpx.get(f"{world.fhir}/ImagingStudy/{world.sa1}", headers=proxy).status_code == 403
        own = httpx.get(f"{world.fhir}/ImagingStudy", params={"patient": world.a}, headers=ann)
        assert len(own.json()["entry"]) == 2
    finally:
        access.unrestrict(secured.archive.engine, secured.a_series)
    assert httpx.get(study, headers=proxy).status_code == 200


def test_a_study_excluded_from_a_proxy_is_neither_found_nor_retrieved(secured: Secured) -> None:
    world = secured.world
    proxy = bearer(secured.patient_token(A_SCOPE, username="parent", patient=world.a))
    ann = bearer(secured.patient_token(A_SCOPE))
    access.exclude(secured.archive.engine, "parent", world.sa2, "teenager's wish")
    try:
        assert _study_uids(httpx.get(f"{secured.dicomweb}/studies", headers=proxy)) == [world.sa1]
        assert httpx.get(f"{secured.dicomweb}/studies/{world.sa2}", headers=proxy).status_code == 403
        assert httpx.get(f"{secured.dicomweb}/studies/{world.sa2}", headers=ann).status_code == 200
    finally:
        access.include(secured.archive.engine, "parent", world.sa2)
    assert httpx.get(f"{secured.dicomweb}/studies/{world.sa2}", headers=proxy).status_code == 200


def test_every_decision_is_audited_allow_and_deny(secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    world = secured.world
    token = bearer(secured.patient_token(A_SCOPE))
    with caplog.at_level(logging.INFO, logger="imagebridge.audit"):
        assert httpx.get(f"{secured.dicomweb}/studies/{world.sa1}/metadata", headers=token).status_code == 200
        assert httpx.get(f"{secured.dicomweb}/studies/{world.sb1}/metadata", headers=token).status_code == 403
        assert httpx.get(f"{secured.dicomweb}/studies", headers=token).status_code == 200
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "imagebridge.audit"]
    decisions = {(r["outcome"], r.get("study"), r["interaction"]) for r in records}
    assert ("allow", world.sa1, "read") in decisions
    assert ("deny", world.sb1, "read") in decisions
    assert ("allow", None, "search") in decisions
    denied = next(r for r in records if r["outcome"] == "deny")
    assert denied["patient"] == world.b and "another patient" in denied["reason"]


def test_cli_restricts_lists_and_unrestricts(secured: Secured) -> None:
    settings = secured.archive.settings
    where = ["--data-dir", str(settings.data_dir), "--database-url", settings.effective_database_url]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imagebridge", *args, *where],
            capture_output=True,
            text=True,
            timeout=120,
            env={"COLUMNS": "250", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        )

    world = secured.world
    made = cli("study", "restrict", world.sa2, "--category", "sensitive", "--reason", "mental health")
    assert made.returncode == 0, made.stderr
    try:
        listed = cli("study", "restrictions")
        assert world.sa2 in listed.stdout and "sensitive" in listed.stdout
        again = cli("study", "restrict", world.sa2, "--category", "sensitive", "--reason", "twice")
        assert again.returncode == 2 and "restricted already" in again.stderr
        proxy = bearer(secured.patient_token(A_SCOPE, username="parent", patient=world.a))
        assert httpx.get(f"{secured.dicomweb}/studies/{world.sa2}", headers=proxy).status_code == 403
    finally:
        lifted = cli("study", "unrestrict", world.sa2)
    assert lifted.returncode == 0, lifted.stderr
    unknown = cli("study", "restrict", "1.2.3.999", "--category", "c", "--reason", "r")
    assert unknown.returncode == 2 and "not a study, series or instance" in unknown.stderr
    excluded = cli("user", "exclude-study", "parent", world.sa2, "--reason", "wish")
    assert excluded.returncode == 0, excluded.stderr
    assert world.sa2 in cli("user", "exclusions", "parent").stdout
    assert cli("user", "include-study", "parent", world.sa2).returncode == 0
    nobody = cli("user", "exclude-study", "nobody", world.sa2)
    assert nobody.returncode == 2 and "no user" in nobody.stderr


def test_rendered_of_another_patient_is_403_and_unsupported_media_never_leaks(secured: Secured) -> None:
    world = secured.world
    token = bearer(secured.patient_token(A_SCOPE))
    b_instance = f"{world.sb1}/series/{secured.b_series[0]}/instances/{secured.b_instances[0]}"
    odd = httpx.get(
        f"{secured.dicomweb}/studies/{b_instance}/rendered", headers={**token, "Accept": "image/x-unknown"}
    )
    assert odd.status_code == 403  # access is decided before content negotiation (scenario 27)
    own = httpx.get(
        f"{secured.dicomweb}/studies/{world.sa1}/series/{secured.a_series}/instances/{secured.a_instance}/rendered",
        headers={**token, "Accept": "image/x-unknown"},
    )
    assert own.status_code == 406
