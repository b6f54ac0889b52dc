"""The command line as an administrator uses it: sources, import --source, review, purge-outside."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from imagebridge.cli.main import app
from tests.cli.test_import import summary
from tests.factory import part10
from tests.reconcile.helpers import outside


def run_cli(*args: str) -> Result:
    """In-process (a subprocess per command took seconds each); output as a terminal 200 wide."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_source_import_review_and_purge(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    disc = tmp_path / "disc"
    disc.mkdir()
    local = tmp_path / "local"
    local.mkdir()
    (local / "IM1").write_bytes(
        part10(
            outside(
                PatientID="L-1",
                AccessionNumber="A1",
                PatientName="Smith^John",
                PatientBirthDate="19800512",
                PatientSex="M",
            )
        )
    )
    assert run_cli("import", str(local), *data).exit_code == 0
    study = generate_uid()
    for n in (1, 2):
        (disc / f"IM{n}").write_bytes(
            part10(
                outside(
                    study=study,
                    InstanceNumber=n,
                    PatientName="Smith^John",
                    PatientBirthDate="19801205",
                    PatientSex="M",
                )
            )
        )

    added = run_cli("source", "add", "north", "--issuer", "NORTH-HOSP", "--accession-prefix", "N-", *data)
    assert added.exit_code == 0, added.stderr
    listed = run_cli("source", "list", *data)
    assert "north" in listed.output and "NORTH-HOSP" in listed.output and "N-" in listed.output

    unknown = run_cli("import", str(disc), "--source", "south", *data)
    assert unknown.exit_code == 2 and "no import source named 'south' (known: north)" in unknown.stderr

    first = run_cli("import", str(disc), "--source", "north", *data)
    assert first.exit_code == 0, first.stderr
    rows = summary(first.output)
    assert (rows["stored"], rows["waiting for review"]) == ("0", "2")
    assert (
        f"study {study}: waiting for review, case 1 (suggested: L-1); scorecard, score 68.8" in first.output
    )
    again = run_cli("import", str(disc), "--source", "north", *data)
    assert summary(again.output)["already present"] == "2"

    queue = run_cli("review", "list", *data)
    assert "Smith^John 19801205 M (N-778)" in queue.output and "68.8" in queue.output
    accepted = run_cli("review", "accept", "1", "--by", "admin", *data)
    assert accepted.exit_code == 0 and "case 1: linked to L-1" in accepted.output
    twice = run_cli("review", "new", "1", *data)
    assert twice.exit_code == 2 and "not waiting for review" in twice.stderr
    assert "the review queue is empty" in run_cli("review", "list", *data).output

    dry = run_cli("purge-outside", "--dry-run", *data)
    assert (
        dry.exit_code == 0 and "would delete 0 outside studies imported more than 90 days ago" in dry.output
    )
    bad = run_cli("purge-outside", "--older-than", "soon", *data)
    assert bad.exit_code == 2 and "'soon' is not an age like 90d" in bad.stderr
    assert "Traceback" not in first.stderr + queue.stderr + accepted.stderr + bad.stderr
