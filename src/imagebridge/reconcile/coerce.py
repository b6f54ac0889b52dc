"""Give a received dataset the local patient identity, keeping what it said before.

PS3.3 C.12.1.1.9 (Original Attributes Sequence): every value we replace or insert is recorded in
one item of (0400,0561) with the time, the modifying system, the source and the reason
``COERCE``; an attribute that was absent is recorded with an empty value. The source's own
Patient ID goes into Other Patient IDs Sequence (0010,1002), so it can still be found.

Accession numbers (SH, at most 16 characters) are prefixed by the source: ``PREFIX + original``
when it fits, else ``PREFIX`` followed by the first hex digits of the SHA-256 of the original,
up to 16 characters. A prefixed accession number's Issuer of Accession Number Sequence (0008,0051)
is one item naming the source as Local Namespace Entity ID (0040,0031); the disc's own issuer, or
its absence, goes into Original Attributes Sequence with the rest. The SOP, series and study UIDs
are never changed.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

ACCESSION_MAX = 16
PREFIX_MAX = 8
_COERCED = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")


@dataclass(frozen=True)
class Identity:
    """A patient as the local archive knows them."""

    patient_id: str
    issuer: str
    name: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True)
class Incoming:
    """Who a received instance says its patient is; the issuer is the source's when absent."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    address: str
    other_ids: tuple[tuple[str, str], ...]
    """(Patient ID, Issuer of Patient ID) pairs from Other Patient IDs Sequence (0010,1002)."""


def incoming(ds: Dataset, source_issuer: str) -> Incoming:
    others = tuple(
        (str(item.get("PatientID", "")).strip(), str(item.get("IssuerOfPatientID", "")).strip())
        for item in ds.get("OtherPatientIDsSequence", [])
        if str(item.get("PatientID", "")).strip()
    )
    return Incoming(
        patient_id=str(ds.get("PatientID", "")).strip(),
        issuer=str(ds.get("IssuerOfPatientID", "")).strip() or source_issuer,
        name=str(ds.get("PatientName", "")),
        birth_date=str(ds.get("PatientBirthDate", "")),
        sex=str(ds.get("PatientSex", "")),
        address=str(ds.get("PatientAddress", "")),
        other_ids=others,
    )


def valid_prefix(prefix: str) -> str:
    """An accession prefix: 1 to 8 of A-Z, 0-9, '-' or '_' (safe in SH, never a wildcard)."""
    if not re.fullmatch(r"[A-Z0-9_-]{1,8}", prefix):
        raise ValueError("an accession prefix has 1 to 8 characters from A-Z, 0-9, '-' and '_'")
    return prefix


def default_prefix(source_name: str) -> str:
    """``NAME-`` from the first four letters or digits of the source name, upper case."""
    code = re.sub(r"[^A-Z0-9]", "", source_name.upper())[:4] or "EXT"
    return f"{code}-"


def prefixed_accession(original: str, prefix: str) -> str:
    """The stored accession number; '' stays '' (an unknown accession cannot collide)."""
    original = original.strip()
    if not original:
        return ""
    candidate = prefix + original
    if len(candidate) <= ACCESSION_MAX:
        return candidate
    digest = hashlib.sha256(original.encode()).hexdigest().upper()
    return prefix + digest[: ACCESSION_MAX - len(prefix)]


def coerce(
    ds: Dataset,
    identity: Identity,
    *,
    source_name: str,
    source_patient: tuple[str, str],
    accession_prefix: str,
    modifying_system: str,
    now: datetime,
) -> bool:
    """Rewrite ``ds`` in place; True if anything changed (and was recorded)."""
    wanted: dict[str, str] = {
        "PatientID": identity.patient_id,
        "IssuerOfPatientID": identity.issuer,
        "PatientName": identity.name,
        "PatientBirthDate": identity.birth_date,
        "PatientSex": identity.sex,
        "AccessionNumber": prefixed_accession(str(ds.get("AccessionNumber", "")), accession_prefix),
    }
    originals = Dataset()
    for keyword, value in wanted.items():
        before = ds.get(keyword)
        if str(before if before is not None else "") == value:
            continue
        if before is not None:  # a copy: setting the new value changes the element in place
            element = ds[keyword]
            originals[keyword] = DataElement(element.tag, element.VR, copy.deepcopy(element.value))
        else:
            originals[keyword] = DataElement(keyword, dictionary_VR(keyword), None)
        setattr(ds, keyword, value)
    others_changed = _add_other_id(ds, source_patient, identity, originals)
    _set_accession_issuer(ds, source_name, originals)
    if len(originals) == 0 and not others_changed:
        return False
    item = Dataset()
    item.AttributeModificationDateTime = now.strftime("%Y%m%d%H%M%S.%f%z")
    item.ModifyingSystem = modifying_system[:64]
    item.SourceOfPreviousValues = source_name[:64]
    item.ReasonForTheAttributeModification = "COERCE"
    item.ModifiedAttributesSequence = Sequence([originals])
    history = ds.get("OriginalAttributesSequence") or Sequence()
    history.append(item)
    ds.OriginalAttributesSequence = history
    return True


def accession_issuer(source_name: str) -> Dataset:
    """The Issuer of Accession Number of a prefixed accession: the source, as a local namespace."""
    item = Dataset()
    item.LocalNamespaceEntityID = source_name
    return item


def _set_accession_issuer(ds: Dataset, source_name: str, originals: Dataset) -> None:
    """A prefixed accession number is issued in the source's namespace: Issuer of Accession Number
    Sequence (0008,0051) names the source (Local Namespace Entity ID), whatever the disc said
    (kept in ``originals``; absent: recorded empty). An empty accession number keeps its issuer."""
    if not str(ds.get("AccessionNumber", "")).strip():
        return
    wanted = accession_issuer(source_name)
    present = ds.get("IssuerOfAccessionNumberSequence")
    items = list(present) if present is not None else []
    if len(items) == 1 and _same_item(items[0], wanted):
        return
    if present is None:
        originals["IssuerOfAccessionNumberSequence"] = DataElement(0x00080051, "SQ", Sequence())
    else:
        originals.IssuerOfAccessionNumberSequence = Sequence([_copy(i) for i in items])
    ds.IssuerOfAccessionNumberSequence = Sequence([wanted])


def _same_item(item: Dataset, wanted: Dataset) -> bool:
    keys = {e.keyword for e in item if str(e.value or "").strip()}
    return keys == {e.keyword for e in wanted} and all(
        str(item.get(e.keyword, "")).strip() == str(e.value) for e in wanted
    )


def _add_other_id(
    ds: Dataset, source_patient: tuple[str, str], identity: Identity, originals: Dataset
) -> bool:
    patient_id, issuer = source_patient
    if not patient_id or (patient_id, issuer) == (identity.patient_id, identity.issuer):
        return False
    present = ds.get("OtherPatientIDsSequence")
    items = list(present) if present is not None else []
    if any(
        str(i.get("PatientID", "")) == patient_id and str(i.get("IssuerOfPatientID", "")) == issuer
        for i in items
    ):
        return False
    originals.OtherPatientIDsSequence = Sequence([_copy(i) for i in items])
    other = Dataset()
    other.PatientID = patient_id
    other.IssuerOfPatientID = issuer
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([*items, other])
    return True


def _copy(item: Dataset) -> Dataset:
    copied = Dataset()
    for element in item:
        copied.add(DataElement(element.tag, element.VR, copy.deepcopy(element.value)))
    return copied
