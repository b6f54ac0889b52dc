"""Integrated mode end to end: the EHR (one imagebridge process) issues tokens, the imaging server
(a second process, ``[ehr]`` configured) honours them by introspection (issue 4 item 4;
smart-imaging-access.md §2.4, §2.5, §2.8, §4 scenarios 7, 11, 13, 14, 16, 28, 29)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from dicomweb_client import DICOMwebClient
from joserfc import jwt

from tests.integrated.conftest import (
    APP,
    CACHE_SECONDS,
    IMAGING_CLIENT,
    PACS_READER,
    Setup,
    prepare_imaging,
    serve,
    write_config,
)

WADO_ACCEPT = "multipart/related; type=application/dicom; transfer-syntax=*"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def studies(setup: Setup, token: str, patient: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{setup.fhir}/ImagingStudy", params={"patient": patient, **params}, headers=bearer(token), timeout=30
    )


def uids(bundle: dict) -> set[str]:  # type: ignore[type-arg]
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "ImagingStudy"
    }


def test_a_token_from_the_ehr_reads_its_patients_studies(setup: Setup) -> None:
    token = setup.app_token(setup.a)
    for reference in (setup.a, f"Patient/{setup.a}", f"{setup.ehr.url}/fhir/Patient/{setup.a}"):
        response = studies(setup, token, reference)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert uids(bundle) == {setup.sa1, setup.sa2}
        for entry in bundle["entry"]:
            assert entry["resource"]["subject"] == {"reference": f"{setup.ehr.url}/fhir/Patient/{setup.a}"}
    read = httpx.get(f"{setup.fhir}/ImagingStudy/{setup.sa1}", headers=bearer(token))
    assert read.status_code == 200
    assert read.json()["subject"]["reference"] == f"{setup.ehr.url}/fhir/Patient/{setup.a}"


def test_wado_and_qido_with_the_ehrs_token(setup: Setup) -> None:
    """§4 scenario 19: A's token retrieves SA1 as DICOM; every part is SA1 with A's MRN."""
    token = setup.app_token(setup.a)
    client = DICOMwebClient(url=setup.dicomweb, headers=bearer(token))
    [instance] = client.retrieve_study(setup.sa1)
    assert instance.StudyInstanceUID == setup.sa1 and instance.PatientID == "MRN-A"
    found = {s["0020000D"]["Value"][0] for s in client.search_for_studies()}
    assert found == {setup.sa1, setup.sa2}
    metadata = httpx.get(f"{setup.dicomweb}/studies/{setup.sa2}/metadata", headers=bearer(token))
    assert metadata.status_code == 200


def test_wado_of_another_patient_is_403_without_a_byte(setup: Setup) -> None:
    token = setup.app_token(setup.a)
    for path in (f"studies/{setup.sb1}", f"studies/{setup.sb1}/metadata", f"studies/{setup.sb1}/rendered"):
        response = httpx.get(f"{setup.dicomweb}/{path}", headers={**bearer(token), "Accept": WADO_ACCEPT})
        assert response.status_code == 403, path
        assert b"DICM" not in response.content
    for headers in ({}, bearer("garbage-" + "y" * 30)):
        response = httpx.get(f"{setup.dicomweb}/studies/{setup.sa1}", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_another_patients_data_is_refused(setup: Setup) -> None:
    token = setup.app_token(setup.a)
    assert studies(setup, token, setup.b).status_code == 403
    assert httpx.get(f"{setup.fhir}/ImagingStudy/{setup.sb1}", headers=bearer(token)).status_code == 403
    only_a = studies(setup, token, setup.a, identifier=f"urn:oid:{setup.sb1}")
    assert only_a.status_code == 200 and uids(only_a.json()) == set()
    bob = setup.app_token(setup.b)
    assert uids(studies(setup, bob, setup.b).json()) == {setup.sb1}


def test_no_garbage_or_malformed_tokens_are_401(setup: Setup) -> None:
    url = f"{setup.fhir}/ImagingStudy?patient={setup.a}"
    for headers in ({}, {"Authorization": "Basic abc"}, bearer("garbage-" + "x" * 30)):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_client_assertion_is_not_a_bearer_token(setup: Setup) -> None:
    """§4 scenario 29: the signed assertion a backend client sends to /token opens nothing here."""
    now = int(time.time())
    claims = {"iss": PACS_READER, "sub": PACS_READER, "aud": f"{setup.ehr.url}/oauth/token", "exp": now + 120}
    header = {"alg": "ES384", "kid": setup.reader_key.kid, "typ": "JWT"}
    assertion = jwt.encode(header, {**claims, "jti": "x1"}, setup.reader_key, algorithms=["ES384"])
    assert studies(setup, assertion, setup.a).status_code == 401
    assert httpx.get(f"{setup.dicomweb}/studies/{setup.sa1}", headers=bearer(assertion)).status_code == 401


def test_v1_and_wildcard_patient_scopes_are_honoured(setup: Setup) -> None:
    """§4 scenario 15: patient/*.read, patient/*.rs and patient/ImagingStudy.read all reach A's studies."""
    for scope in ("patient/*.read", "patient/*.rs", "patient/ImagingStudy.read"):
        token = setup.app_token(setup.a, scope=f"launch/patient {scope}")
        response = studies(setup, token, setup.a)
        assert response.status_code == 200, scope
        assert uids(response.json()) == {setup.sa1, setup.sa2}


def test_a_token_of_another_authorization_server_is_401(setup: Setup) -> None:
    """The imaging server's own local authorization server is not the authority in integrated mode."""
    from imagebridge.auth.tokens import Grant, Tokens
    from imagebridge.config import Settings
    from tests.integrated.conftest import _engine

    engine = _engine(Settings(data_dir=setup.imaging_dir))
    local, _ = Tokens(engine).issue(
        "access", Grant("imagebridge-cli", "patient/ImagingStudy.rs", setup.a_key), 600
    )
    engine.dispose()
    response = studies(setup, local, setup.a)
    assert response.status_code == 401
    assert "unknown, expired or revoked at the EHR" in response.text


def test_revocation_at_the_ehr_bites_within_the_cache_budget(setup: Setup) -> None:
    token = setup.app_token(setup.a)
    started = time.monotonic()
    assert studies(setup, token, setup.a).status_code == 200
    revoked = httpx.post(f"{setup.ehr.url}/oauth/revoke", data={"token": token, "client_id": APP})
    assert revoked.status_code == 200
    introspected = httpx.post(
        f"{setup.ehr.url}/oauth/introspect",
        data={"token": token},
        headers=bearer(setup.backend_token(PACS_READER, setup.reader_key, "ES384", "system/Patient.rs")),
    )
    assert introspected.json() == {"active": False}
    sent = time.monotonic()
    cached = studies(setup, token, setup.a)
    if sent - started < CACHE_SECONDS / 2:
        assert cached.status_code == 200, "an answer younger than the budget is reused"
    time.sleep(max(0.0, started + CACHE_SECONDS + 0.2 - time.monotonic()))
    assert studies(setup, token, setup.a).status_code == 401
    assert httpx.get(f"{setup.dicomweb}/studies/{setup.sa1}", headers=bearer(token)).status_code == 401


def test_an_expired_token_is_refused(setup: Setup) -> None:
    token = setup.app_token(setup.a, lifetime=1)
    time.sleep(2.1)
    response = studies(setup, token, setup.a)
    assert response.status_code == 401
    assert httpx.get(f"{setup.dicomweb}/studies", headers=bearer(token)).status_code == 401


def test_a_cached_answer_never_outlives_the_tokens_exp(setup: Setup) -> None:
    token = setup.app_token(setup.a, lifetime=2)
    first = studies(setup, token, setup.a)
    if first.status_code == 200:
        time.sleep(2.2)
    assert studies(setup, token, setup.a).status_code == 401


def test_a_token_without_imaging_scope_or_patient_context_is_refused(setup: Setup) -> None:
    no_imaging = setup.app_token(setup.a, scope="launch/patient patient/Observation.rs")
    assert studies(setup, no_imaging, setup.a).status_code == 403
    grant_without_patient = setup.ehr_tokens()
    from imagebridge.auth.tokens import Grant

    token, _ = grant_without_patient.issue("access", Grant(APP, "patient/ImagingStudy.rs"), 600)
    assert studies(setup, token, setup.a).status_code == 403


def test_a_system_token_follows_the_clients_policy_here(setup: Setup) -> None:
    """§4 scenario 28: the reporting service may see SA1 only (its policy at the imaging server)."""
    token = setup.backend_token(PACS_READER, setup.reader_key, "ES384", "system/ImagingStudy.rs")
    response = studies(setup, token, setup.a)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert uids(bundle) == {setup.sa1}
    assert bundle["entry"][0]["resource"]["subject"]["reference"] == f"{setup.ehr.url}/fhir/Patient/{setup.a}"
    assert studies(setup, token, setup.b).status_code == 403
    assert httpx.get(f"{setup.fhir}/ImagingStudy/{setup.sa2}", headers=bearer(token)).status_code == 403
    wado = f"{setup.dicomweb}/studies"
    assert (
        httpx.get(f"{wado}/{setup.sa1}", headers={**bearer(token), "Accept": WADO_ACCEPT}).status_code == 200
    )
    assert (
        httpx.get(f"{wado}/{setup.sa2}", headers={**bearer(token), "Accept": WADO_ACCEPT}).status_code == 403
    )
    assert httpx.get(f"{wado}/{setup.sb1}/metadata", headers=bearer(token)).status_code == 403


def test_the_imaging_servers_own_backend_token_is_not_a_user_token(setup: Setup) -> None:
    own = setup.backend_token(IMAGING_CLIENT, setup.imaging_key, "RS384", "system/Patient.rs")
    response = studies(setup, own, setup.a)
    assert response.status_code == 401
    assert "own backend-services token" in response.text
    assert httpx.get(f"{setup.dicomweb}/studies/{setup.sa1}", headers=bearer(own)).status_code == 401


def test_discovery_points_at_the_ehr(setup: Setup) -> None:
    config = httpx.get(f"{setup.fhir}/.well-known/smart-configuration").json()
    assert config["authorization_endpoint"] == f"{setup.ehr.url}/oauth/authorize"
    assert config["token_endpoint"] == f"{setup.ehr.url}/oauth/token"
    assert config["issuer"] == f"{setup.ehr.url}/oauth"
    [associated] = config["associated_endpoints"]
    assert associated["url"] == setup.fhir
    assert "smart-imaging-access" in associated["capabilities"]
    statement = httpx.get(f"{setup.fhir}/metadata").json()
    [oauth] = statement["rest"][0]["security"]["extension"]
    uris = {e["url"]: e["valueUri"] for e in oauth["extension"]}
    assert uris["authorize"] == f"{setup.ehr.url}/oauth/authorize"
    assert uris["token"] == f"{setup.ehr.url}/oauth/token"


def test_an_unreachable_ehr_is_503_with_retry_after(setup: Setup, tmp_path: Path) -> None:
    """A second imaging server whose EHR is gone: a clear 503, never a 500, never a pass."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    key_file = tmp_path / "key.json"
    key_file.write_text((setup.imaging_dir.parent / "imaging-server-key.json").read_text())
    config = write_config(tmp_path / "down.toml", dead, key_file, retry_after=7, timeout=2)
    data = tmp_path / "imaging-down"
    prepare_imaging(data, "1.2.3.1", "1.2.3.2", "1.2.3.3")
    with serve(data, "--config", str(config)) as imaging:
        response = httpx.get(
            f"{imaging.url}/fhir/ImagingStudy",
            params={"patient": setup.a},
            headers=bearer("any-token-at-all"),
        )
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "7"
        assert "EHR cannot be reached" in response.text
        assert httpx.get(f"{imaging.url}/fhir/.well-known/smart-configuration").status_code == 503
        wado = httpx.get(f"{imaging.url}/dicomweb/studies", headers=bearer("any-token-at-all"))
        assert wado.status_code == 503 and wado.headers["retry-after"] == "7"
        assert "Traceback" not in imaging.output()


def test_a_system_token_of_a_client_unknown_here_reaches_nothing(setup: Setup) -> None:
    """The EHR may let a client reach everyone; here the scope alone grants nothing (§2.4)."""
    from imagebridge.auth.tokens import Grant

    grant = Grant(
        "imagebridge-cli", "system/ImagingStudy.rs", data={"policy": {"patients": "*", "studies": "*"}}
    )
    token, _ = setup.ehr_tokens().issue("access", grant, 600)
    assert studies(setup, token, setup.a).status_code == 403


def test_an_imaging_server_on_postgresql(setup: Setup, tmp_path: Path) -> None:
    """The same mapping and decisions with the archive index on PostgreSQL (patient keys, policy)."""
    from pydicom.uid import generate_uid

    from tests.conftest import _temporary_pg_database

    databases = _temporary_pg_database()
    database_url = next(databases)
    try:
        sa1, sa2, sb1 = generate_uid(), generate_uid(), generate_uid()
        prepare_imaging(tmp_path / "imaging-pg", sa1, sa2, sb1, database_url)
        key_file = setup.imaging_dir.parent / "imaging-server-key.json"
        config = write_config(tmp_path / "pg.toml", setup.ehr.url, key_file)
        with serve(
            tmp_path / "imaging-pg", "--config", str(config), "--database-url", database_url
        ) as imaging:
            token = setup.app_token(setup.a)
            search = httpx.get(
                f"{imaging.url}/fhir/ImagingStudy", params={"patient": setup.a}, headers=bearer(token)
            )
            assert search.status_code == 200, search.text
            assert uids(search.json()) == {sa1, sa2}
            other = httpx.get(
                f"{imaging.url}/fhir/ImagingStudy", params={"patient": setup.b}, headers=bearer(token)
            )
            assert other.status_code == 403
            wado = f"{imaging.url}/dicomweb/studies"
            assert (
                httpx.get(f"{wado}/{sa1}", headers={**bearer(token), "Accept": WADO_ACCEPT}).status_code
                == 200
            )
            assert (
                httpx.get(f"{wado}/{sb1}", headers={**bearer(token), "Accept": WADO_ACCEPT}).status_code
                == 403
            )
            reader = setup.backend_token(PACS_READER, setup.reader_key, "ES384", "system/ImagingStudy.rs")
            assert uids(studies_at(imaging.url, reader, setup.a).json()) == {sa1}
    finally:
        next(databases, None)


def studies_at(base: str, token: str, patient: str) -> httpx.Response:
    return httpx.get(f"{base}/fhir/ImagingStudy", params={"patient": patient}, headers=bearer(token))
