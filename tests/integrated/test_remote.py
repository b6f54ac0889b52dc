"""``auth.remote.EhrAuthority`` against a scripted EHR (httpx.MockTransport): what is asked, how
often, and what each EHR answer becomes. The two-process tests cover the same paths end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from pydantic import ValidationError

from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.errors import AccessDenied, InvalidToken
from imagebridge.auth.remote import EhrAuthority, lenient_scopes, mrn_identifier
from imagebridge.config import EhrSettings
from imagebridge.errors import UpstreamUnavailable
from imagebridge.fhir.identifiers import issuer_of, system_of
from imagebridge.fhir.index import fhir_id

EHR = "http://ehr.test"
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


class FakeEhr:
    """Answers like a SMART EHR and counts what it was asked."""

    def __init__(self, key: RSAKey | ECKey) -> None:
        self.key = key
        self.tokens: dict[str, dict[str, Any]] = {}
        self.patients: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.backend_tokens = 0
        self.refuse_backend_once = False
        self.assertion_algs: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(path)
        if path == "/fhir/.well-known/smart-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": f"{EHR}/oauth",
                    "authorization_endpoint": f"{EHR}/oauth/authorize",
                    "token_endpoint": f"{EHR}/oauth/token",
                    "introspection_endpoint": f"{EHR}/oauth/introspect",
                    "capabilities": ["launch-ehr"],
                },
            )
        if path == "/oauth/token":
            form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
            decoded = jwt.decode(form["client_assertion"], self.key, algorithms=["RS384", "ES384"])
            self.assertion_algs.append(decoded.header["alg"])
            assert decoded.claims["iss"] == decoded.claims["sub"] == "imaging"
            assert decoded.claims["aud"] == f"{EHR}/oauth/token"
            self.backend_tokens += 1
            return httpx.Response(
                200, json={"access_token": f"backend-{self.backend_tokens}", "expires_in": 300}
            )
        bearer = request.headers.get("authorization", "")
        if self.refuse_backend_once and bearer == "Bearer backend-1":
            self.refuse_backend_once = False
            return httpx.Response(401, json={"error": "invalid_token"})
        if path == "/oauth/introspect":
            token = dict(x.split("=", 1) for x in request.content.decode().split("&"))["token"]
            return httpx.Response(200, json=self.tokens.get(token, {"active": False}))
        if path == "/fhir/Patient":
            system, _, value = request.url.params["identifier"].partition("|")
            matches = [
                {"resource": p}
                for p in self.patients.values()
                if any(i.get("system") == system and i.get("value") == value for i in p.get("identifier", []))
            ]
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": matches})
        if path.startswith("/fhir/Patient/"):
            found = self.patients.get(path.rsplit("/", 1)[1])
            if found == {"forbidden": True}:
                return httpx.Response(403, json={"error": "insufficient_scope"})
            return httpx.Response(200, json=found) if found else httpx.Response(404, json={})
        return httpx.Response(404, json={})


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(RSAKey.generate_key(2048, auto_kid=True).as_dict(private=True)))
    return path


def authority(ehr: FakeEhr, key_file: Path, **settings: Any) -> EhrAuthority:
    config = EhrSettings(fhir_base=f"{EHR}/fhir", client_id="imaging", private_key_file=key_file, **settings)
    return EhrAuthority(
        config,
        patient_key=fhir_id,
        issuer_of=issuer_of,
        system_of=system_of,
        client_policy=lambda client_id: AccessGrant(),
        transport=httpx.MockTransport(ehr),
    )


def active(**fields: Any) -> dict[str, Any]:
    return {
        "active": True,
        "client_id": "app",
        "scope": "patient/ImagingStudy.rs",
        "exp": time.time() + 600,
        **fields,
    }


def fake(key_file: Path) -> FakeEhr:
    return FakeEhr(RSAKey.import_key(json.loads(key_file.read_text())))


def test_an_answer_is_reused_for_the_budget_and_keyed_by_digest(key_file: Path) -> None:
    ehr = fake(key_file)
    ehr.tokens["t1"] = active()
    remote = authority(ehr, key_file, cache_seconds=1)
    for _ in range(5):
        assert remote.principal("t1").client_id == "app"
    assert ehr.calls.count("/oauth/introspect") == 1
    assert ehr.backend_tokens == 1
    assert "t1" not in repr(remote._tokens._items)
    time.sleep(1.1)
    remote.principal("t1")
    assert ehr.calls.count("/oauth/introspect") == 2
    assert ehr.backend_tokens == 1, "the backend token is kept until near its expiry"


def test_an_answer_never_outlives_exp(key_file: Path) -> None:
    ehr = fake(key_file)
    ehr.tokens["short"] = active(exp=time.time() + 1)
    remote = authority(ehr, key_file, cache_seconds=60)
    remote.principal("short")
    time.sleep(1.1)
    with pytest.raises(InvalidToken):
        remote.principal("short")


def test_inactive_and_foreign_answers_are_invalid_tokens(key_file: Path) -> None:
    ehr = fake(key_file)
    ehr.tokens["other-as"] = active(iss="http://elsewhere/oauth", sub="u")
    ehr.tokens["expired"] = active(exp=time.time() - 5)
    ehr.tokens["ours"] = active(client_id="imaging", scope="system/Patient.rs")
    ehr.tokens["no-client"] = {"active": True, "scope": "patient/*.rs", "exp": time.time() + 60}
    remote = authority(ehr, key_file)
    for token in ("unknown", "other-as", "expired", "ours", "no-client"):
        with pytest.raises(InvalidToken):
            remote.principal(token)
    with pytest.raises(InvalidToken, match="own backend"):
        remote.principal(remote.ehr.backend_token())


def test_negative_answers_are_remembered_briefly(key_file: Path) -> None:
    ehr = fake(key_file)
    remote = authority(ehr, key_file, negative_cache_seconds=30)
    for _ in range(3):
        with pytest.raises(InvalidToken):
            remote.principal("nope")
    assert ehr.calls.count("/oauth/introspect") == 1
    uncached = authority(fake(key_file), key_file, negative_cache_seconds=0)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            uncached.principal("nope")


def test_a_refused_backend_token_is_renewed_once(key_file: Path) -> None:
    ehr = fake(key_file)
    ehr.tokens["t"] = active()
    ehr.refuse_backend_once = True
    remote = authority(ehr, key_file)
    assert remote.principal("t").client_id == "app"
    assert ehr.backend_tokens == 2


def test_the_patient_becomes_the_archive_patient(key_file: Path) -> None:
    ehr = fake(key_file)
    ehr.tokens["t"] = active(
        patient="123", fhirUser=f"{EHR}/fhir/Patient/123", sub="ann", scope="openid x/y patient/*.rs"
    )
    ehr.patients["123"] = {
        "resourceType": "Patient",
        "id": "123",
        "identifier": [
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-99-9999"},
            {"type": MR, "system": "urn:oid:1.2.3", "value": "MRN-1"},
        ],
    }
    remote = authority(ehr, key_file, issuers={"urn:oid:1.2.3": "HOSP"})
    principal = remote.principal("t")
    assert principal.patient == fhir_id("MRN-1", "HOSP")
    assert principal.fhir_user == f"{EHR}/fhir/Patient/123" and principal.subject == "ann"
    assert set(principal.scopes.items()) == {"patient/*.rs", "openid"}
    assert principal.user_patients == ()
    assert remote.subject(principal.patient, "MRN-1", "HOSP") == f"{EHR}/fhir/Patient/123"
    remote.principal("t")
    assert ehr.calls.count("/fhir/Patient/123") == 1


def test_a_patient_without_an_mrn_or_unknown_is_denied(key_file: Path) -> None:
    ehr = fake(key_file)
    ehr.tokens["t"] = active(patient="7")
    ehr.tokens["gone"] = active(patient="8")
    ehr.patients["7"] = {
        "resourceType": "Patient",
        "id": "7",
        "identifier": [{"system": "urn:x", "value": "v"}],
    }
    remote = authority(ehr, key_file)
    with pytest.raises(AccessDenied, match="no identifier matching"):
        remote.principal("t")
    with pytest.raises(AccessDenied, match="no Patient/8"):
        remote.principal("gone")
    ehr.tokens["hidden"] = active(patient="9")
    ehr.patients["9"] = {"forbidden": True}
    with pytest.raises(AccessDenied, match="cannot be established"):
        remote.principal("hidden")


def test_an_unreachable_ehr_is_upstream_unavailable(key_file: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    config = EhrSettings(
        fhir_base=f"{EHR}/fhir", client_id="imaging", private_key_file=key_file, retry_after=9
    )
    remote = EhrAuthority(
        config,
        patient_key=fhir_id,
        issuer_of=issuer_of,
        system_of=system_of,
        client_policy=lambda c: AccessGrant(),
        transport=httpx.MockTransport(down),
    )
    with pytest.raises(UpstreamUnavailable) as caught:
        remote.principal("t")
    assert caught.value.retry_after == 9


def test_an_ec_key_signs_es384(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    path = tmp_path / "ec.json"
    path.write_text(json.dumps(key.as_dict(private=True)))
    ehr = FakeEhr(key)
    ehr.tokens["t"] = active()
    authority(ehr, path).principal("t")
    assert ehr.assertion_algs == ["ES384"]


def test_a_pem_key_and_a_public_key(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, auto_kid=True)
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.as_pem(private=True))
    ehr = FakeEhr(key)
    ehr.tokens["t"] = active()
    authority(ehr, pem).principal("t")
    assert ehr.assertion_algs == ["RS384"]
    public = tmp_path / "public.json"
    public.write_text(json.dumps(key.as_dict(private=False)))
    with pytest.raises(ValidationError, match="public key"):
        authority(ehr, public)
    with pytest.raises(ValidationError, match="does not fit"):
        authority(ehr, pem, signing_alg="ES384")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ValidationError, match="holds no RSA or EC private key"):
        authority(ehr, garbage)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("identifier.where(type.coding.code='MR')", ("MRN-1", "urn:oid:1.2.3")),
        ("identifier.where(type.text='EPIC')", ("E-9", "urn:epic")),
        (
            "identifier.where(system='urn:oid:2.16.840.1.113883.4.1')",
            ("999", "urn:oid:2.16.840.1.113883.4.1"),
        ),
        ("identifier.first()", ("999", "urn:oid:2.16.840.1.113883.4.1")),
        ("identifier.where(type.coding.code='PI')", ("L-5", "General Hospital")),
        ("identifier.where(type.coding.code='XX')", None),
    ],
)
def test_mrn_rules(rule: str, expected: tuple[str, str] | None) -> None:
    patient = {
        "identifier": [
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999"},
            {"type": {"text": "EPIC"}, "system": "urn:epic", "value": "E-9"},
            {"type": MR, "system": "urn:oid:1.2.3", "value": "MRN-1"},
            {
                "type": {"coding": [{"code": "PI"}]},
                "assigner": {"display": "General Hospital"},
                "value": "L-5",
            },
        ]
    }
    assert mrn_identifier(patient, rule) == expected


def test_scopes_the_server_does_not_know_grant_nothing() -> None:
    scopes = lenient_scopes("patient/ImagingStudy.rs epic.vendor.scope launch/patient user/Bogus.zz")
    assert set(scopes.items()) == {"patient/ImagingStudy.rs", "launch/patient"}


def test_settings_refuse_a_budget_over_60_seconds_and_unknown_rules(key_file: Path) -> None:
    base = {"fhir_base": f"{EHR}/fhir", "client_id": "imaging", "private_key_file": key_file}
    with pytest.raises(ValidationError):
        EhrSettings(**base, cache_seconds=61)
    with pytest.raises(ValidationError):
        EhrSettings(**base, mrn_identifier="identifier[0]")
    with pytest.raises(ValidationError):
        EhrSettings(**{**base, "private_key_file": key_file.parent / "missing.json"})


def test_a_subject_is_found_at_the_ehr_by_identifier(key_file: Path) -> None:
    """A study seen without a patient token (system/ scopes): the EHR is searched by MRN, once."""
    ehr = fake(key_file)
    ehr.patients["42"] = {
        "resourceType": "Patient",
        "id": "42",
        "identifier": [{"system": "urn:oid:1.2.3", "value": "M1"}],
    }
    ehr.patients["43"] = {
        "resourceType": "Patient",
        "id": "43",
        "identifier": [{"system": "urn:oid:9.9", "value": "D"}],
    }
    ehr.patients["44"] = {
        "resourceType": "Patient",
        "id": "44",
        "identifier": [{"system": "urn:oid:9.9", "value": "D"}],
    }
    remote = authority(ehr, key_file, issuers={"urn:oid:1.2.3": "HOSP"})
    key = fhir_id("M1", "HOSP")
    assert remote.subject(key, "M1", "HOSP") == f"{EHR}/fhir/Patient/42"
    assert remote.subject(key, "M1", "HOSP") == f"{EHR}/fhir/Patient/42"
    assert ehr.calls.count("/fhir/Patient") == 1
    assert remote.subject(fhir_id("D", "9.9"), "D", "9.9") is None, (
        "two EHR patients: keep the local reference"
    )
    assert remote.subject(fhir_id("X", "HOSP"), "X", "HOSP") is None
