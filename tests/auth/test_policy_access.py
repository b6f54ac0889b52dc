"""``auth.policy`` rules added for DICOMweb: create and delete, restricted studies, exclusions, reach."""

from __future__ import annotations

from imagebridge.auth.clients import AccessGrant
from imagebridge.auth.policy import Principal, Reach, Target, anonymous, decide, reach, sees_everything
from imagebridge.auth.scopes import parse

A, B, SA1, SA2 = "pa", "pb", "1.2.1", "1.2.2"


def _patient(scope: str = "patient/ImagingStudy.cruds", **kw: object) -> Principal:
    values: dict[str, object] = {"patient": A, "subject": "ann", "fhir_user": f"Patient/{A}"} | kw
    return Principal("viewer", parse(scope), **values)  # type: ignore[arg-type]


def _study(interaction: str = "read", **kw: object) -> Target:
    values: dict[str, object] = {"patient": A, "study_uid": SA1} | kw
    return Target("ImagingStudy", interaction, **values)  # type: ignore[arg-type]


def test_create_and_delete_need_their_permission_letters() -> None:
    reader = _patient("patient/ImagingStudy.rs")
    assert decide(reader, _study("create")).error == "insufficient_scope"
    assert decide(reader, _study("delete")).error == "insufficient_scope"
    assert decide(_patient(), _study("create"))
    assert not decide(_patient(), _study("create", patient=B))


def test_only_administrators_and_system_clients_delete() -> None:
    assert "never delete" in decide(_patient(), _study("delete")).reason
    clinician = Principal("app", parse("user/ImagingStudy.cruds"), subject="drx", role="clinician")
    assert not decide(clinician, _study("delete"))
    admin = Principal("app", parse("user/ImagingStudy.cruds"), subject="root", role="admin")
    assert decide(admin, _study("delete"))
    system = Principal("svc", parse("system/ImagingStudy.d"), client_policy=AccessGrant((A,), (SA1,)))
    assert decide(system, _study("delete"))
    assert not decide(system, _study("delete", study_uid=SA2))


def test_restricted_studies_are_for_the_patient_administrators_and_named_system_grants() -> None:
    restricted = _study(restricted=True)
    assert decide(_patient(), restricted)  # the patient herself
    proxy = _patient(subject="parent", fhir_user="RelatedPerson/parent")
    assert "restricted" in decide(proxy, restricted).reason
    clinician = Principal("app", parse("user/ImagingStudy.rs"), subject="drx", fhir_user="Practitioner/drx")
    assert not decide(clinician, restricted)
    admin = Principal("app", parse("user/ImagingStudy.rs"), subject="root", role="admin")
    assert decide(admin, restricted)
    named = Principal("svc", parse("system/ImagingStudy.rs"), client_policy=AccessGrant((A,), (SA1,)))
    assert decide(named, restricted)
    everything = Principal("svc", parse("system/ImagingStudy.rs"), client_policy=AccessGrant("*", "*"))
    assert not decide(everything, restricted)
    share = _patient(share="s1", studies=(SA1,))
    assert not decide(share, restricted)  # a share never carries restricted studies
    assert decide(anonymous(), restricted)


def test_an_excluded_study_is_hidden_from_that_user_only() -> None:
    hidden = _study(hidden_from=("parent",))
    assert not decide(_patient(subject="parent", fhir_user="RelatedPerson/parent"), hidden)
    assert decide(_patient(), hidden)


def test_reach_describes_the_same_rules_for_sql() -> None:
    assert reach(_patient()) == [Reach((A,), None, (A,), (), "ann")]
    proxy = _patient(subject="parent", fhir_user="RelatedPerson/parent")
    assert reach(proxy) == [Reach((A,), None, (), (), "parent")]
    assert reach(_patient(patient=None)) == []  # no launch context: nothing
    assert reach(_patient("patient/Observation.rs")) == []
    system = Principal("svc", parse("system/ImagingStudy.rs"), client_policy=AccessGrant((A,), (SA1, SA2)))
    assert reach(system) == [Reach((A,), (SA1, SA2), (), (SA1, SA2), None)]
    shared = Principal(
        "svc", parse("system/ImagingStudy.rs"), client_policy=AccessGrant("*", (SA1, SA2)), studies=(SA2,)
    )
    assert reach(shared)[0].studies == (SA2,)
    assert reach(anonymous())[0].unlimited
    assert sees_everything(anonymous(), "read") and not sees_everything(_patient(), "read")
