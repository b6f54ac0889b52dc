"""Sample data for ``make run``: pydicom's test files (and pydicom-data's, when installed), and demo
users tied to the sample patients so that every sign-in path can be tried at once."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from imagebridge.auth.users import Role, Users
from imagebridge.cli.common import console
from imagebridge.fhir.index import FhirIndex
from imagebridge.identifiers import public_id
from imagebridge.index.schema import fhir_patient_ids, patients, studies
from imagebridge.oauth.pages import person_name
from imagebridge.services import importer
from imagebridge.services.archive import Archive

_MARKER = ".samples-loaded"


def sample_dirs() -> Iterator[Path]:
    """Folders that hold sample files, found locally (no downloads)."""
    for package, sub in (("pydicom", "data/test_files"), ("data_store", "data")):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / sub
            if folder.is_dir():
                yield folder


def load_once(archive: Archive) -> importer.Summary | None:
    marker = archive.settings.data_dir / _MARKER
    if marker.exists():
        return None
    summary = importer.Summary()
    candidates = list(importer.discover(list(sample_dirs()), summary.skipped))
    with console.status(f"loading {len(candidates)} sample files…"):
        for candidate in candidates:
            importer.import_candidate(archive.ingest, candidate, summary)
    marker.write_text("sample data loaded\n")
    console.print(
        f"sample data: {summary.stored} instances stored in {len(summary.studies)} studies; "
        f"{len(summary.skipped)} files are not DICOM"
    )
    for reason, count in refusal_reasons(summary).most_common():
        console.print(f"  {count} refused: {reason}")
    return summary


def refusal_reasons(summary: importer.Summary) -> Counter[str]:
    """Refusals grouped by kind: the sample sets hold many variants of one image under one UID."""
    kinds: Counter[str] = Counter()
    for _name, reason in summary.refused:
        if "already stored as SOP Instance" in reason:
            kinds["a variant of an image already stored under the same SOP Instance UID"] += 1
        else:
            kinds[reason.split(":")[0]] += 1
    return kinds


DEMO_USERS = (
    ("demo-patient", Role.PATIENT, "Demo Patient"),
    ("demo-parent", Role.PROXY, "Demo Parent"),
    ("demo-clinician", Role.CLINICIAN, "Dr Demo"),
    ("demo-admin", Role.ADMIN, "Demo Administrator"),
)


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: Role
    patients: tuple[tuple[str, str], ...]
    """(FHIR Patient id, name) of the patients the user acts for; empty for every patient."""
    password: str | None
    """The password, only in the run that created the user (it is stored as an argon2 hash only)."""


def demo_users(archive: Archive) -> list[DemoUser]:
    """Demo accounts tied to sample patients, created on the first start; their passwords are new
    random ones, returned once. Later starts return the accounts without passwords."""
    users = Users(archive.engine)
    existing = {u.username: u for u in users.all()}
    if all(name in existing for name, _role, _display in DEMO_USERS):
        names = _patient_names(archive)
        return [
            DemoUser(name, role, tuple((p, names.get(p, p)) for p in existing[name].patients), None)
            for name, role, _display in DEMO_USERS
        ]
    people = _sample_people(archive)
    if len(people) < 2:
        return []
    chosen = {Role.PATIENT: people[:1], Role.PROXY: people[:2], Role.CLINICIAN: [], Role.ADMIN: []}
    made = []
    for name, role, display in DEMO_USERS:
        password = public_id(12)
        ids = tuple(pid for pid, _label in chosen[role])
        if name in existing:
            users.set_password(name, password)
        else:
            users.add(name, password, role, display_name=display, patients=ids)
        made.append(DemoUser(name, role, tuple(chosen[role]), password))
    return made


def _sample_people(archive: Archive) -> list[tuple[str, str]]:
    """Sample patients with a person's name (Family^Given), most studies first."""
    FhirIndex(archive.engine).assign_ids()
    count = func.count(studies.c.pk)
    query = (
        select(fhir_patient_ids.c.fhir_id, patients.c.name, count)
        .join(studies, studies.c.patient_pk == patients.c.pk)
        .join(
            fhir_patient_ids,
            (fhir_patient_ids.c.patient_id == patients.c.patient_id)
            & (fhir_patient_ids.c.issuer == patients.c.issuer),
        )
        .where(patients.c.patient_id != "", patients.c.name.like("%^%"))
        .group_by(fhir_patient_ids.c.fhir_id, patients.c.name)
        .order_by(count.desc(), patients.c.name)
    )
    with archive.engine.connect() as conn:
        return [(r.fhir_id, person_name(r.name)) for r in conn.execute(query)]


def _patient_names(archive: Archive) -> dict[str, str]:
    return {r.fhir_id: person_name(r.name) for r in FhirIndex(archive.engine).patients([])}


def print_demo(accounts: list[DemoUser], base: str, data_dir: Path) -> None:
    """What to open and how to sign in: printed at start-up, passwords only on the first start."""
    if not accounts:
        say("no demo users: the samples hold no patients with a person's name")
        return
    where = f"--data-dir {data_dir.resolve()}"
    say(f"  portal         {base}/portal")
    say(f"  viewer         {base}/viewer")
    say(f"  FHIR           {base}/fhir    SMART: {base}/fhir/.well-known/smart-configuration")
    say(f"  EHR launcher   {base}/oauth/ehr")
    if accounts[0].password is None:
        names = ", ".join(a.username for a in accounts)
        say(f"demo users exist ({names}); their passwords were shown on the first start.")
        say(f"  set a new one: [bold]imagebridge user password demo-patient {where}[/]")
    else:
        say("demo users (passwords shown only now; stored as argon2 hashes):")
        for account in accounts:
            reach = "; ".join(f"{label} ({pid})" for pid, label in account.patients) or "every patient"
            say(f"  {account.role.value:<10} {account.username:<15} {account.password}   {reach}")
    patient = accounts[0].patients[0][0] if accounts[0].patients else ""
    say("a bearer token for scripts:")
    say(f"  imagebridge token --scope 'system/ImagingStudy.rs system/Patient.rs' {where}")
    say(
        f'  curl -H "Authorization: Bearer $(imagebridge token --scope patient/ImagingStudy.rs '
        f"--patient {patient} {where})\" '{base}/fhir/ImagingStudy?patient={patient}'"
    )


def say(text: str) -> None:
    """One line, never wrapped: commands and passwords must survive copy and paste."""
    console.print(text, soft_wrap=True)
