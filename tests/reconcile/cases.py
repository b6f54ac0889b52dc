"""The matching cases of issue 6 against one local patient; ``python -m tests.reconcile.cases`` prints the table."""

from __future__ import annotations

from dataclasses import dataclass

from imagebridge.reconcile.score import Demographics, Scorecard, score, verdict

LOCAL = Demographics.from_dicom("Smith^John", "19800512", "M", "12 King St W, Toronto ON M5V 2T6")


@dataclass(frozen=True)
class MatchCase:
    name: str
    incoming: Demographics
    expected: str


def _d(name: str, birth: str, sex: str, address: str = "") -> Demographics:
    return Demographics.from_dicom(name, birth, sex, address)


CASES = (
    MatchCase("exact", _d("SMITH^JOHN", "19800512", "M"), "match"),
    MatchCase("exact, same postcode", _d("Smith^John", "19800512", "M", "M5V 2T6"), "match"),
    MatchCase("typo in family name (Smyth)", _d("Smyth^John", "19800512", "M"), "match"),
    MatchCase("typo in given name (Jon)", _d("Smith^Jon", "19800512", "M"), "match"),
    MatchCase("sex missing on the disc", _d("Smith^John", "19800512", ""), "match"),
    MatchCase("day and month swapped, same postcode", _d("Smith^John", "19801205", "M", "M5V2T6"), "match"),
    MatchCase("day and month swapped", _d("Smith^John", "19801205", "M"), "review"),
    MatchCase("one digit wrong in birth date", _d("Smith^John", "19800612", "M"), "review"),
    MatchCase("same name and birth date, other sex", _d("Smith^John", "19800512", "F"), "review"),
    MatchCase("given name missing", _d("Smith", "19800512", "M"), "review"),
    MatchCase("typo in family name and day/month swapped", _d("Smyth^John", "19801205", "M"), "review"),
    MatchCase("twin: other given name", _d("Smith^James", "19800512", "M"), "different"),
    MatchCase("different person, same name", _d("Smith^John", "19621103", "M"), "different"),
    MatchCase(
        "same name, other birth date and postcode", _d("Smith^John", "19751020", "M", "K1A 0B1"), "different"
    ),
    MatchCase("different person", _d("Nguyen^Linh", "19910203", "F"), "different"),
)


def results(card: Scorecard | None = None) -> list[tuple[str, float, str, str]]:
    """(case, score, decision, expected) for every case."""
    card = card or Scorecard()
    rows = []
    for case in CASES:
        total = score(case.incoming, LOCAL, card).total
        rows.append((case.name, total, verdict(total, card).value, case.expected))
    return rows


def table(card: Scorecard | None = None) -> str:
    card = card or Scorecard()
    lines = [
        f"local patient: SMITH^JOHN, 1980-05-12, M, M5V 2T6; match > {card.match_above:g}, "
        f"different < {card.different_below:g}",
        "| case | score | decision |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {total:g} | {decision} |" for name, total, decision, _ in results(card)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
