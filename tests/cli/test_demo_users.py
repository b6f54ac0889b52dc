"""`imagebridge serve --load-samples` (what `make run` starts): demo users tied to sample patients,
their passwords printed once, working sign-ins, a working token example, nothing stored in plain text."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from imagebridge.auth.users import Users
from imagebridge.cli import samples
from imagebridge.services.archive import Archive
from tests.cli.test_import import CLI, run_cli
from tests.factory import make_instance, part10


@contextmanager
def started(data_dir: Path) -> Iterator[tuple[str, str]]:
    """``serve --load-samples`` on a free port; yields its base URL and everything printed before it serves."""
    process = subprocess.Popen(
        [*CLI, "serve", "--port", "0", "--no-dicom", "--load-samples", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "80", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or "Press Ctrl+C" not in lines[-1]:
            line = process.stdout.readline()
            assert line, "serve exited early:\n" + "".join(lines)
            lines.append(line)
        output = "".join(lines)
        match = re.search(r"DICOMweb root\s+(http://127\.0\.0\.1:\d+)/dicomweb", output)
        assert match, output
        for _ in range(600):
            try:
                if httpx.get(f"{match.group(1)}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                continue
        yield match.group(1), output
    finally:
        process.terminate()
        process.wait(timeout=30)


def passwords(output: str) -> dict[str, str]:
    return dict(
        re.findall(r"^\s+(?:patient|proxy|clinician|admin)\s+(demo-\S+)\s+(\S+)", output, re.MULTILINE)
    )


def test_first_start_prints_demo_sign_ins_that_work_and_later_starts_do_not(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with started(data) as (base, output):
        secrets = passwords(output)
        assert set(secrets) == {"demo-patient", "demo-parent", "demo-clinician", "demo-admin"}, output
        assert len(set(secrets.values())) == 4 and all(len(p) >= 12 for p in secrets.values())
        for path in ("/portal", "/viewer", "/fhir", "/dicomweb", "/oauth/ehr"):
            assert f"{base}{path}" in output
        assert "Doe, Peter" in output and "Doe, Archibald" in output
        clinician = httpx.post(
            f"{base}/oauth/ehr/sign-in",
            data={"username": "demo-clinician", "password": secrets["demo-clinician"]},
        )
        assert clinician.status_code == 303
        patient = httpx.post(
            f"{base}/oauth/ehr/sign-in",
            data={"username": "demo-patient", "password": secrets["demo-patient"]},
        )
        assert patient.status_code == 403, "the password matched; a patient just may not use the EHR launcher"
        wrong = httpx.post(
            f"{base}/oauth/ehr/sign-in", data={"username": "demo-admin", "password": "guess guess"}
        )
        assert wrong.status_code == 401

        example = re.search(r"\$\((imagebridge token [^)]*)\)\" '([^']+)'", output)
        assert example, output
        command = shlex.split(example.group(1))[1:]
        token = run_cli(*command)
        assert token.returncode == 0, token.stderr
        studies = httpx.get(example.group(2), headers={"Authorization": f"Bearer {token.stdout.strip()}"})
        assert studies.status_code == 200 and studies.json()["total"] >= 1

    stored = b"".join(path.read_bytes() for path in data.glob("index.sqlite3*"))
    assert stored and not any(p.encode() in stored for p in secrets.values()), (
        "passwords stored in plain text"
    )

    with started(data) as (_base, again):
        assert passwords(again) == {}
        assert "demo users exist" in again and "imagebridge user password demo-patient" in again


def test_demo_users_pick_people_with_the_most_studies(archive: Archive) -> None:
    """On either index backend: the patient user is the person with most studies, the parent has two."""
    for patient_id, name, count in (
        ("P1", "Doe^Peter", 3),
        ("P2", "Doe^Archibald", 2),
        ("P3", "NOTAPERSON", 5),
    ):
        for _ in range(count):
            ds = make_instance(PatientID=patient_id, PatientName=name)
            archive.ingest.store_stream(io.BytesIO(part10(ds)))
    first = samples.demo_users(archive)
    roles = {a.username: a for a in first}
    assert [label for _pid, label in roles["demo-patient"].patients] == ["Doe, Peter"]
    assert [label for _pid, label in roles["demo-parent"].patients] == ["Doe, Peter", "Doe, Archibald"]
    assert roles["demo-clinician"].patients == () and all(a.password for a in first)
    users = Users(archive.engine)
    assert users.authenticate("demo-parent", str(roles["demo-parent"].password)) is not None
    again = samples.demo_users(archive)
    assert [a.username for a in again] == [a.username for a in first]
    assert all(a.password is None for a in again) and again[1].patients == roles["demo-parent"].patients
