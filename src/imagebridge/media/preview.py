"""What an import would bring in, read from the candidates' headers only (``import --dry-run``).

Nothing is spooled or written: each candidate's header is parsed up to its pixel data and folded
into patients and studies, so an operator sees the disc's content before loading it.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import pydicom
from pydicom.errors import InvalidDicomError

from imagebridge.services.importer import Candidate, looks_like_dicom

_TAGS = [
    "SpecificCharacterSet",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "SeriesInstanceUID",
    "Modality",
]


@dataclass
class StudyPreview:
    study_uid: str
    date: str = ""
    description: str = ""
    accession: str = ""
    modalities: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    instances: int = 0
    bytes: int = 0
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class PatientPreview:
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    studies: dict[str, StudyPreview] = field(default_factory=dict)


@dataclass
class Preview:
    patients: dict[tuple[str, str], PatientPreview] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(s.instances for p in self.patients.values() for s in p.studies.values())

    @property
    def studies(self) -> int:
        return sum(len(p.studies) for p in self.patients.values())


def preview(candidates: Iterable[Candidate], preview: Preview | None = None) -> Preview:
    """Fold the candidates' headers into patients and studies; unreadable ones go to ``skipped``."""
    result = preview or Preview()
    for candidate in candidates:
        _add(result, candidate)
    return result


def _add(result: Preview, candidate: Candidate) -> None:
    try:
        with candidate.opener() as stream:
            if not looks_like_dicom(stream.read(132)):
                result.skipped.append((candidate.name, "not a DICOM file (no DICM prefix)"))
                return
            stream.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=_TAGS)
    except (OSError, zipfile.BadZipFile, EOFError, InvalidDicomError) as exc:
        result.skipped.append((candidate.name, f"unreadable: {exc}"))
        return
    except Exception as exc:  # pydicom raises many types on damaged input
        result.skipped.append((candidate.name, f"unreadable DICOM data: {exc}"))
        return
    study_uid = str(ds.get("StudyInstanceUID") or "")
    if not study_uid:
        result.skipped.append((candidate.name, "StudyInstanceUID (0020,000D) is missing or empty"))
        return
    key = (str(ds.get("PatientID") or ""), str(ds.get("IssuerOfPatientID") or ""))
    patient = result.patients.setdefault(
        key,
        PatientPreview(
            key[0], key[1], str(ds.get("PatientName") or ""), str(ds.get("PatientBirthDate") or "")
        ),
    )
    study = patient.studies.setdefault(
        study_uid,
        StudyPreview(
            study_uid,
            str(ds.get("StudyDate") or ""),
            str(ds.get("StudyDescription") or ""),
            str(ds.get("AccessionNumber") or ""),
        ),
    )
    study.instances += 1
    study.bytes += candidate.size
    study.candidates.append(candidate)
    study.series.add(str(ds.get("SeriesInstanceUID") or ""))
    if ds.get("Modality"):
        study.modalities.add(str(ds.Modality))
