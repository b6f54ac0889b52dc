"""The cross-patient leak matrix (issue 4 item 5; smart-imaging-access.md §4 scenarios 20, 21, 24, 27, 28).

Every DICOMweb endpoint kind by every kind of caller without access to patient B: the status is
the one §2.7 says, and **no byte of B's data** (B's UIDs, Patient ID, name, pixel bytes) is in
the answer, headers included. SQLite and PostgreSQL, real server, real tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydicom.uid import generate_uid

from imagebridge.index.lookup import Target
from tests.auth.helpers import backend_token, bearer
from tests.auth.secured import Secured, secured_world
from tests.conftest import BACKENDS
from tests.factory import make_instance, multipart, part10, stow_type

A_SCOPE = "launch/patient patient/ImagingStudy.cruds"


@pytest.fixture(scope="module", params=BACKENDS)
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from secured_world(request.param, tmp_path_factory.mktemp(f"leak-{request.param}"))


@dataclass(frozen=True)
class Call:
    kind: str
    method: str
    path: str
    body: Callable[[Secured], bytes] | None = None


def _b_instance(s: Secured) -> bytes:
    """A new instance of patient B into B's study (what a STOW-RS of B's data looks like)."""
    ds = make_instance(study=s.world.sb1, PatientID="MRN-B", IssuerOfPatientID="HOSP", PatientName="Beta^Bob")
    return multipart([part10(ds)])


def calls(s: Secured) -> list[Call]:
    study = f"/studies/{s.world.sb1}"
    series = f"{study}/series/{s.b_series[-1]}"
    instance = f"{series}/instances/{s.b_instances[-1]}"
    return [
        Call("qido studies", "GET", f"/studies?StudyInstanceUID={s.world.sb1}"),
        Call("qido studies by PatientID", "GET", "/studies?PatientID=MRN-B"),
        Call("qido all studies", "GET", "/studies"),
        Call("qido series", "GET", f"/series?StudyInstanceUID={s.world.sb1}"),
        Call("qido instances", "GET", f"/instances?StudyInstanceUID={s.world.sb1}"),
        Call("qido study/series", "GET", f"{study}/series"),
        Call("qido study/instances", "GET", f"{study}/instances"),
        Call("qido series/instances", "GET", f"{series}/instances"),
        Call("wado study", "GET", study),
        Call("wado series", "GET", series),
        Call("wado instance", "GET", instance),
        Call("metadata study", "GET", f"{study}/metadata"),
        Call("metadata series", "GET", f"{series}/metadata"),
        Call("metadata instance", "GET", f"{instance}/metadata"),
        Call("frames", "GET", f"{instance}/frames/1"),
        Call("rendered study", "GET", f"{study}/rendered"),
        Call("rendered series", "GET", f"{series}/rendered"),
        Call("rendered instance", "GET", f"{instance}/rendered"),
        Call("rendered frame", "GET", f"{instance}/frames/1/rendered"),
        Call("thumbnail study", "GET", f"{study}/thumbnail"),
        Call("thumbnail series", "GET", f"{series}/thumbnail"),
        Call("thumbnail instance", "GET", f"{instance}/thumbnail"),
        Call("thumbnail frame", "GET", f"{instance}/frames/1/thumbnail"),
        Call("bulkdata", "GET", f"{instance}/bulkdata/7FE00010"),
        Call("head study", "HEAD", study),
        Call("stow", "POST", "/studies", _b_instance),
        Call("stow into study", "POST", study, _b_instance),
        Call("delete instance", "DELETE", instance),
        Call("delete series", "DELETE", series),
        Call("delete study", "DELETE", study),
    ]


def expected(caller: str, call: Call) -> int:
    """§2.7: no usable token 401; no imaging scope 403; otherwise searches find nothing (200),
    a store of B's instance is refused per instance (409: none stored) where the token may
    store at all, and everything else is 403."""
    if caller in ("no token", "garbage", "expired", "revoked"):
        return 401
    if caller == "Observation only":
        return 403
    if call.kind.startswith("qido"):
        return 200
    if call.kind.startswith("stow"):
        return 409 if caller == "A's token" else 403
    return 403


CALLERS = ["A's token", "no token", "garbage", "expired", "revoked", "Observation only", "system SA1 only"]


def _headers(s: Secured, caller: str) -> dict[str, str]:
    match caller:
        case "A's token":
            return bearer(s.patient_token(A_SCOPE))
        case "no token":
            return {}
        case "garbage":
            return bearer("not-a-token-at-all")
        case "expired":
            return bearer(s.expired(s.patient_token(A_SCOPE)))
        case "revoked":
            return bearer(s.revoked(s.patient_token(A_SCOPE)))
        case "Observation only":
            return bearer(s.patient_token("launch/patient patient/Observation.cruds"))
        case _:
            return bearer(backend_token(s.world))


@pytest.mark.parametrize("caller", CALLERS)
def test_no_byte_of_patient_b_reaches_a_caller_without_access(secured: Secured, caller: str) -> None:
    headers = _headers(secured, caller)
    secrets = secured.b_secrets()
    problems = []
    for call in calls(secured):
        extra = {"Content-Type": stow_type()} if call.body else {}
        content = call.body(secured) if call.body else None
        response = httpx.request(
            call.method, secured.dicomweb + call.path, headers={**headers, **extra}, content=content
        )
        seen = response.content + "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        leaked = [x[:24] for x in secrets if x in seen]
        if response.status_code != expected(caller, call) or leaked:
            problems.append(f"{call.kind}: {response.status_code} leaked={leaked} {response.text[:120]}")
        if call.kind.startswith("qido") and response.status_code == 200:
            assert all(s.encode() not in response.content for s in (secured.world.sb1,)), call.kind
    assert not problems, "\n".join(problems)
    # Nothing was deleted or added: B's study is exactly as it was.
    assert [i.sop_uid for i in secured.archive.lookup.instances(Target(secured.world.sb1))] == list(
        secured.b_instances
    )


def test_a_uid_swapped_into_a_valid_url_is_refused(secured: Secured) -> None:
    """Scenario 20: A's own series and instance path with B's study (and the reverse) never serve B."""
    world = secured.world
    token = bearer(secured.patient_token(A_SCOPE))
    swapped = [
        f"/studies/{world.sb1}/series/{secured.a_series}/instances/{secured.a_instance}",
        f"/studies/{world.sa1}/series/{secured.b_series[-1]}/instances/{secured.b_instances[-1]}",
        f"/studies/{world.sa1}/series/{secured.b_series[-1]}/metadata",
        f"/studies/{generate_uid()}/series/{secured.b_series[-1]}",
    ]
    for path in swapped:
        response = httpx.get(secured.dicomweb + path, headers=token)
        assert response.status_code in (403, 404), path
        assert not any(x in response.content for x in secured.b_secrets() if x not in path.encode()), path
        assert b"MRN-B" not in response.content and b"BETA" not in response.content.upper()
