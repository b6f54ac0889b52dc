"""Unit cases for the pure parts: SMART scopes v1/v2, PKCE S256, and the policy decision."""

from __future__ import annotations

import pytest

from imagebridge.auth import pkce
from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.errors import InvalidGrant, InvalidRequest, InvalidScope
from imagebridge.auth.policy import Principal, Target, decide
from imagebridge.auth.scopes import parse


@pytest.mark.parametrize(
    "scope",
    [
        "patient/ImagingStudy.rs",
        "patient/ImagingStudy.read",
        "patient/*.read",
        "patient/*.rs",
        "patient/*.cruds",
        "patient/ImagingStudy.*",
        "patient/*.*",
        "patient/ImagingStudy.rs?category=x",
    ],
)
def test_imaging_read_and_search_scopes(scope: str) -> None:
    scopes = parse(scope)
    granted = scopes.grants("patient", "ImagingStudy", "r") and scopes.grants("patient", "ImagingStudy", "s")
    assert granted is ("?" not in scope)


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.rs",
        "patient/ImagingStudy.c",
        "user/ImagingStudy.rs",
        "patient/ImagingStudy.cud",
        "patient/ImagingStudy.write",
    ],
)
def test_scopes_that_do_not_grant_patient_imaging_search(scope: str) -> None:
    assert not parse(scope).grants("patient", "ImagingStudy", "s")


def test_split_v2_scopes_grant_each_permission() -> None:
    scopes = parse("patient/ImagingStudy.r patient/ImagingStudy.s")
    assert scopes.grants("patient", "ImagingStudy", "r") and scopes.grants("patient", "ImagingStudy", "s")
    assert not parse("patient/ImagingStudy.r").grants("patient", "ImagingStudy", "s")


@pytest.mark.parametrize(
    "bad",
    [
        "patient/ImagingStudy.sr",
        "patient/ImagingStudy.",
        "patient/imagingstudy.rs",
        "doctor/ImagingStudy.rs",
        "patient/ImagingStudy.rsx",
        "admin",
    ],
)
def test_malformed_scopes_are_refused(bad: str) -> None:
    with pytest.raises(InvalidScope):
        parse(bad)


def test_names_and_levels() -> None:
    scopes = parse("openid fhirUser launch/patient offline_access user/*.rs system/Patient.read")
    assert scopes.has("openid") and scopes.has("launch/patient") and scopes.levels() == {"user", "system"}
    assert scopes.grants("system", "Patient", "s") and not scopes.grants("system", "ImagingStudy", "s")


def test_pkce_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pkce.verify(verifier, pkce.s256(verifier))
    with pytest.raises(InvalidGrant):
        pkce.verify("x" * 43, pkce.s256(verifier))


@pytest.mark.parametrize("method", ["plain", None, "S512"])
def test_pkce_refuses_plain_and_unknown_methods(method: str | None) -> None:
    with pytest.raises(InvalidRequest):
        pkce.check_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", method)


def study(patient: str, uid: str = "1.2.3") -> Target:
    return Target("ImagingStudy", "search", patient=patient, study_uid=uid)


def test_policy_patient_scopes_reach_only_the_token_patient() -> None:
    ann = Principal("app", parse("patient/ImagingStudy.rs"), patient="A")
    assert decide(ann, Target("ImagingStudy", "search", "A"))
    assert not decide(ann, Target("ImagingStudy", "search", "B"))
    assert decide(ann, Target("ImagingStudy", "search", "B")).error is None


def test_policy_without_patient_context_denies_patient_scopes() -> None:
    nobody = Principal("app", parse("patient/ImagingStudy.rs"))
    assert not decide(nobody, Target("ImagingStudy", "search", "A"))


def test_policy_missing_scope_is_insufficient_scope() -> None:
    ann = Principal("app", parse("patient/Observation.rs"), patient="A")
    decision = decide(ann, Target("ImagingStudy", "search", "A"))
    assert not decision and decision.error == "insufficient_scope"


def test_policy_system_scopes_follow_the_client_policy() -> None:
    backend = Principal("ai", parse("system/ImagingStudy.rs"), client_policy=AccessGrant(("A",), ("S1",)))
    assert decide(backend, study("A", "S1"))
    assert not decide(backend, study("A", "S2"))
    assert not decide(backend, Target("ImagingStudy", "search", "B"))
    assert not decide(Principal("ai", parse("system/ImagingStudy.rs")), Target("ImagingStudy", "search", "A"))


def test_policy_user_scopes_follow_the_user() -> None:
    clinician = Principal("app", parse("user/ImagingStudy.rs"), subject="drx", user_patients=None)
    assert decide(clinician, Target("ImagingStudy", "search", "B"))
    limited = Principal("app", parse("user/ImagingStudy.rs"), subject="nurse", user_patients=("A",))
    assert decide(limited, Target("ImagingStudy", "search", "A"))
    assert not decide(limited, Target("ImagingStudy", "search", "B"))
