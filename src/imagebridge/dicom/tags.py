"""The attributes each query/retrieve level is indexed and answered by (PS3.18 §10.6.3)."""

from __future__ import annotations

from typing import Final

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

PATIENT_TAGS: Final = (
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100021,  # IssuerOfPatientID
    0x00100024,  # IssuerOfPatientIDQualifiersSequence
    0x00100030,  # PatientBirthDate
    0x00100040,  # PatientSex
    0x00101000,  # OtherPatientIDs (retired, still seen)
    0x00101002,  # OtherPatientIDsSequence
)
STUDY_TAGS: Final = (
    0x00080005,  # SpecificCharacterSet
    0x00080020,  # StudyDate
    0x00080030,  # StudyTime
    0x00080050,  # AccessionNumber
    0x00080051,  # IssuerOfAccessionNumberSequence
    0x00080056,  # InstanceAvailability
    0x00080090,  # ReferringPhysicianName
    0x00080080,  # InstitutionName
    0x00081030,  # StudyDescription
    0x00081032,  # ProcedureCodeSequence
    0x00200010,  # StudyID
    0x0020000D,  # StudyInstanceUID
    0x00321060,  # RequestedProcedureDescription
)
SERIES_TAGS: Final = (
    0x00080005,  # SpecificCharacterSet
    0x00080021,  # SeriesDate
    0x00080031,  # SeriesTime
    0x00080060,  # Modality
    0x00080070,  # Manufacturer
    0x0008103E,  # SeriesDescription
    0x00081040,  # InstitutionalDepartmentName
    0x00180015,  # BodyPartExamined
    0x00200011,  # SeriesNumber
    0x0020000E,  # SeriesInstanceUID
    0x00200060,  # Laterality
    0x00400244,  # PerformedProcedureStepStartDate
    0x00400245,  # PerformedProcedureStepStartTime
    0x00400275,  # RequestAttributesSequence
)
INSTANCE_TAGS: Final = (
    0x00080005,  # SpecificCharacterSet
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x00080056,  # InstanceAvailability
    0x00200013,  # InstanceNumber
    0x00280008,  # NumberOfFrames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
    0x00080008,  # ImageType
    0x00080023,  # ContentDate
    0x00080033,  # ContentTime
)


def parse_tag(text: str) -> int:
    """A tag from its keyword (``PatientName``) or eight hex digits (``00100010``)."""
    text = text.strip()
    if len(text) == 8:
        try:
            return int(text, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"'{text}' is neither a DICOM keyword nor a tag of 8 hex digits")
    return tag


def tag_key(tag: int) -> str:
    """The DICOM JSON key of a tag (PS3.18 §F.2.1.1): eight upper-case hex digits."""
    return f"{tag:08X}"


def describe(tag: int) -> str:
    return keyword_for_tag(tag) or tag_key(tag)


def is_standard(tag: int) -> bool:
    """Whether ``tag`` is in the data dictionary with a single VR (so it can be answered empty)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return False
    return " or " not in vr and (tag >> 16) % 2 == 0
