"""The scorecard: each matching case of issue 6 on its side of the thresholds, and its settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagebridge.config import Settings
from imagebridge.reconcile.score import Demographics, Scorecard, Verdict, postcode_of, score, verdict
from tests.reconcile.cases import CASES, LOCAL, results, table


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_case_lands_on_its_side(case: object) -> None:
    name, total, decision, expected = next(r for r in results() if r[0] == case.name)  # type: ignore[attr-defined]
    assert decision == expected, f"{name}: score {total}"


def test_the_uncertain_band_is_bounded_by_cases_on_both_sides() -> None:
    by_name = {name: total for name, total, _, _ in results()}
    assert by_name["same name and birth date, other sex"] == 70  # at the threshold: not above it
    assert by_name["day and month swapped, same postcode"] > 70
    assert 63 <= by_name["typo in family name and day/month swapped"] < 65
    assert 58 < by_name["twin: other given name"] < 63


def test_breakdown_explains_the_score() -> None:
    result = score(Demographics.from_dicom("Smyth^John", "19801205", "M"), LOCAL, Scorecard())
    parts = {c.field: (c.outcome, c.points) for c in result.contributions}
    assert parts == {
        "family_name": ("close", 23.8),
        "given_name": ("agree", 20.0),
        "birth_date": ("swapped", 12.8),
        "sex": ("agree", 8.0),
        "postcode": ("missing", 0.0),
    }
    assert result.total == pytest.approx(sum(p for _, p in parts.values()))


def test_thresholds_and_weights_come_from_settings() -> None:
    swapped = Demographics.from_dicom("Smith^John", "19801205", "M")
    default = Settings().reconciliation.scorecard()
    assert verdict(score(swapped, LOCAL, default).total, default) is Verdict.REVIEW
    lenient = Settings(reconciliation={"match_above": 65, "different_below": 50}).reconciliation.scorecard()
    assert verdict(score(swapped, LOCAL, lenient).total, lenient) is Verdict.MATCH
    heavy = Settings(reconciliation={"weights": {"birth_date": {"agree": 10, "disagree": 0}}})
    card = heavy.reconciliation.scorecard()
    assert card.weights["family_name"].agree == 28  # the others keep their defaults
    assert score(Demographics.from_dicom("Smith^John", "19800512", "M"), LOCAL, card).total == 66


@pytest.mark.parametrize(
    "bad",
    [
        {"match_above": 60, "different_below": 65},
        {"weights": {"shoe_size": {"agree": 5}}},
        {"weights": {"sex": {"agree": 5, "disagree": 3}}},
    ],
)
def test_bad_reconciliation_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(reconciliation=bad)


@pytest.mark.parametrize(
    ("address", "postcode"),
    [
        ("12 King St W, Toronto ON M5V 2T6", "M5V2T6"),
        ("10 Downing Street, London SW1A 2AA", "SW1A2AA"),
        ("1600 Pennsylvania Ave, Washington DC 20500", "20500"),
        ("somewhere", ""),
    ],
)
def test_postcode_is_found_in_free_text_addresses(address: str, postcode: str) -> None:
    assert postcode_of(address) == postcode


def test_matching_results_table(capsys: pytest.CaptureFixture[str]) -> None:
    text = table()
    with capsys.disabled():
        print("\n" + text)
    assert text.count("\n") == len(CASES) + 2
