"""Coercion to the local identity: Original Attributes, Other Patient IDs, accession prefixes."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imagebridge.reconcile.coerce import (
    Identity,
    coerce,
    default_prefix,
    prefixed_accession,
    valid_prefix,
)
from tests.factory import make_instance

LOCAL = Identity("L-1", "HOSP", "Smith^John", "19800512", "M")
WHEN = datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC)
ARGS: dict[str, Any] = {
    "source_name": "north",
    "source_patient": ("N-778", "NORTH-HOSP"),
    "accession_prefix": "N-",
    "modifying_system": "IMAGEBRIDGE",
    "now": WHEN,
}


def test_accession_numbers_are_prefixed_and_fit_sixteen_characters() -> None:
    assert prefixed_accession("A1001", "NRTH-") == "NRTH-A1001"
    long = prefixed_accession("RAD-2026-0000123", "NRTH-")
    assert len(long) == 16 and long.startswith("NRTH-")
    assert long == prefixed_accession("RAD-2026-0000123", "NRTH-")  # stable
    assert long != prefixed_accession("RAD-2026-0000124", "NRTH-")
    assert prefixed_accession("", "NRTH-") == ""
    assert default_prefix("north general") == "NORT-"
    with pytest.raises(ValueError):
        valid_prefix("far*too-long")


def test_coerce_keeps_the_original_values_and_the_source_id() -> None:
    ds = make_instance(
        PatientID="N-778",
        PatientName="SMYTH^JOHN",
        PatientBirthDate="19800512",
        PatientSex="M",
        AccessionNumber="A1",
    )
    sop = ds.SOPInstanceUID
    assert coerce(
        ds,
        LOCAL,
        source_name="north",
        source_patient=("N-778", "NORTH-HOSP"),
        accession_prefix="N-",
        modifying_system="IMAGEBRIDGE",
        now=WHEN,
    )
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("L-1", "HOSP", "Smith^John")
    assert ds.AccessionNumber == "N-A1"
    assert ds.SOPInstanceUID == sop
    item = ds.OriginalAttributesSequence[0]
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert item.ModifyingSystem == "IMAGEBRIDGE"
    assert item.SourceOfPreviousValues == "north"
    assert item.AttributeModificationDateTime.startswith("20261127010203")
    before = item.ModifiedAttributesSequence[0]
    assert before.PatientID == "N-778"
    assert str(before.PatientName) == "SMYTH^JOHN"
    assert before.AccessionNumber == "A1"
    assert "IssuerOfPatientID" in before and not before.IssuerOfPatientID  # was absent: recorded empty
    assert "PatientBirthDate" not in before  # unchanged values are not recorded
    other = ds.OtherPatientIDsSequence[-1]
    assert (other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID) == (
        "N-778",
        "NORTH-HOSP",
        "TEXT",
    )


def test_nothing_to_change_records_nothing() -> None:
    ds = make_instance(
        PatientID="L-1",
        IssuerOfPatientID="HOSP",
        PatientName="Smith^John",
        PatientBirthDate="19800512",
        PatientSex="M",
        AccessionNumber=None,
    )
    changed = coerce(
        ds,
        LOCAL,
        source_name="north",
        source_patient=("L-1", "HOSP"),
        accession_prefix="N-",
        modifying_system="IMAGEBRIDGE",
        now=WHEN,
    )
    assert not changed
    assert "OriginalAttributesSequence" not in ds


def _issuer(**values: str) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def test_a_prefixed_accession_number_is_issued_by_the_source() -> None:
    ds = make_instance(PatientID="N-778", AccessionNumber="A1")
    ds.IssuerOfAccessionNumberSequence = Sequence(
        [
            _issuer(
                LocalNamespaceEntityID="NORTH RIS", UniversalEntityID="1.2.3.4", UniversalEntityIDType="ISO"
            )
        ]
    )
    assert coerce(ds, LOCAL, **ARGS)
    assert ds.AccessionNumber == "N-A1"
    [issuer] = ds.IssuerOfAccessionNumberSequence
    assert issuer.LocalNamespaceEntityID == "north" and "UniversalEntityID" not in issuer
    before = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    [original] = before.IssuerOfAccessionNumberSequence  # the disc's issuer, kept as it was
    assert (original.LocalNamespaceEntityID, original.UniversalEntityID, original.UniversalEntityIDType) == (
        "NORTH RIS",
        "1.2.3.4",
        "ISO",
    )
    assert before.AccessionNumber == "A1"
    # written and read back as Part 10: the sequences survive encoding
    buffer = io.BytesIO()
    ds.save_as(buffer)
    again = dcmread(io.BytesIO(buffer.getvalue()), force=True)
    assert again.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == "north"
    modified = again.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert modified.IssuerOfAccessionNumberSequence[0].UniversalEntityID == "1.2.3.4"


def test_an_absent_accession_issuer_is_added_and_recorded_empty() -> None:
    ds = make_instance(PatientID="N-778", AccessionNumber="A1")
    assert "IssuerOfAccessionNumberSequence" not in ds
    coerce(ds, LOCAL, **ARGS)
    assert [i.LocalNamespaceEntityID for i in ds.IssuerOfAccessionNumberSequence] == ["north"]
    before = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert "IssuerOfAccessionNumberSequence" in before and len(before.IssuerOfAccessionNumberSequence) == 0


def test_the_same_issuer_is_kept_and_an_empty_accession_keeps_its_issuer() -> None:
    already = make_instance(PatientID="L-1", IssuerOfPatientID="HOSP", AccessionNumber="A1")
    already.IssuerOfAccessionNumberSequence = Sequence([_issuer(LocalNamespaceEntityID="north")])
    coerce(already, LOCAL, **ARGS)
    before = already.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert "IssuerOfAccessionNumberSequence" not in before  # unchanged: not recorded
    assert [i.LocalNamespaceEntityID for i in already.IssuerOfAccessionNumberSequence] == ["north"]

    empty = make_instance(PatientID="N-778", AccessionNumber=None)
    empty.IssuerOfAccessionNumberSequence = Sequence([_issuer(LocalNamespaceEntityID="NORTH RIS")])
    coerce(empty, LOCAL, **ARGS)
    assert not empty.get("AccessionNumber")
    assert [i.LocalNamespaceEntityID for i in empty.IssuerOfAccessionNumberSequence] == ["NORTH RIS"]
    before = empty.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert "IssuerOfAccessionNumberSequence" not in before
