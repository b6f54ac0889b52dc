"""Unit cases for FHIR search value parsing (R4 §3.1.1.4): dates with prefixes, references, identifiers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imagebridge.errors import InvalidQuery
from imagebridge.fhir import identifiers
from imagebridge.fhir.resources import human_name
from imagebridge.fhir.search import date_range, patient_reference, split_values


@pytest.mark.parametrize(
    ("value", "prefix", "start", "end"),
    [
        ("2023", "eq", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)),
        ("ge2023-12", "ge", datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)),
        ("lt2023-02-28", "lt", datetime(2023, 2, 28, tzinfo=UTC), datetime(2023, 3, 1, tzinfo=UTC)),
        (
            "gt2023-04-17T04:00:00Z",
            "gt",
            datetime(2023, 4, 17, 4, tzinfo=UTC),
            datetime(2023, 4, 17, 4, 0, 1, tzinfo=UTC),
        ),
        (
            "le2023-04-17T06:00:00+02:00",
            "le",
            datetime(2023, 4, 17, 4, tzinfo=UTC),
            datetime(2023, 4, 17, 4, 0, 1, tzinfo=UTC),
        ),
        (
            "2023-04-17T04:00",
            "eq",
            datetime(2023, 4, 17, 4, tzinfo=UTC),
            datetime(2023, 4, 17, 4, 1, tzinfo=UTC),
        ),
    ],
)
def test_date_ranges(value: str, prefix: str, start: datetime, end: datetime) -> None:
    parsed = date_range(value)
    assert (parsed.prefix, parsed.start, parsed.end) == (prefix, start, end)


@pytest.mark.parametrize("value", ["yesterday", "2023-13-01", "2023-02-30", "gt", "20230101", "2023-1-1"])
def test_bad_dates(value: str) -> None:
    with pytest.raises(InvalidQuery):
        date_range(value)


@pytest.mark.parametrize(
    "value", ["abc", "Patient/abc", "https://ehr.example/fhir/Patient/abc", "http://x/fhir/Patient/abc/"]
)
def test_patient_reference_forms(value: str) -> None:
    assert patient_reference(value) == "abc"


@pytest.mark.parametrize("value", ["Group/abc", "Patient/", "a b", "x" * 65])
def test_bad_patient_references(value: str) -> None:
    with pytest.raises(InvalidQuery):
        patient_reference(value)


def test_commas_or_and_escapes() -> None:
    assert split_values(["CT,MR", "US"]) == ["CT", "MR", "US"]
    assert split_values([r"a\,b"]) == ["a,b"]


@pytest.mark.parametrize(
    ("issuer", "system"),
    [
        ("", identifiers.NO_ISSUER),
        ("1.2.840.99", "urn:oid:1.2.840.99"),
        ("https://h.example/mrn", "https://h.example/mrn"),
        ("HOSP A", "urn:imagebridge:issuer:HOSP%20A"),
    ],
)
def test_identifier_systems_round_trip(issuer: str, system: str) -> None:
    assert identifiers.system_of(issuer) == system and identifiers.issuer_of(system) == issuer


def test_human_names() -> None:
    assert human_name("Doe^Jane^Q^Dr^III") == {
        "text": "Dr Jane Q Doe III",
        "family": "Doe",
        "given": ["Jane", "Q"],
        "prefix": ["Dr"],
        "suffix": ["III"],
    }
    assert human_name("Yamada^Tarou=山田^太郎") == {
        "text": "Tarou Yamada",
        "family": "Yamada",
        "given": ["Tarou"],
    }
    assert human_name("") is None and human_name("^^^^") is None
