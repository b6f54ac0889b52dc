"""The human-readable files of a PDI medium: README.TXT and INDEX.HTM (IHE RAD TF-2 §4.47.4.1.2).

INDEX.HTM is plain HTML 4-era markup without scripts, so any browser on any workstation opens it
from the disc; README.TXT says what the medium holds, who wrote it and that no viewer is included.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from imagebridge import __version__

if TYPE_CHECKING:
    from imagebridge.media.pdi import PatientOnMedia, StudyOnMedia


def person_name(ds: Dataset) -> str:
    """PS3.5 §6.2 PN ``Family^Given^Middle^Prefix^Suffix`` as ``Prefix Given Middle Family Suffix``."""
    value = str(ds.get("PatientName") or "").split("=")[0]
    parts = (value.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = parts
    return " ".join(p for p in (prefix, given, middle, family, suffix) if p) or "(no name)"


def _date(value: object) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) >= 8 and text[:8].isdigit() else text


def _modalities(study: StudyOnMedia) -> str:
    return ", ".join(sorted({str(s.header.get("Modality") or "") for s in study.series.values()} - {""}))


def readme(title: str, patients: list[PatientOnMedia]) -> str:
    lines = [
        title,
        "=" * len(title),
        "",
        "This medium holds medical images in DICOM format (DICOM PS3.10), written as an",
        "IHE Portable Data for Imaging (PDI) file set by imagebridge " + __version__ + ".",
        "",
        "  DICOMDIR    the index of the file set; open it with any DICOM viewer",
        "  DICOM/      the image files, unchanged from the archive",
        "  INDEX.HTM   the list below, for a web browser",
        "",
        "No viewer program is included. Any DICOM viewer reads this medium.",
        "",
    ]
    for patient in patients:
        lines.append(f"Patient: {person_name(patient.header)}  ID: {patient.header.get('PatientID', '')}")
        for study in patient.studies.values():
            description = study.header.get("StudyDescription") or "(no description)"
            lines.append(
                f"  {_date(study.header.get('StudyDate'))}  {description}  [{_modalities(study)}]"
                f"  {len(study.series)} series, {study.instance_count} instances"
            )
        lines.append("")
    return "\n".join(lines)


def index_html(title: str, patients: list[PatientOnMedia]) -> str:
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    for patient in patients:
        header = patient.header
        body.append(
            f"<h2>{esc(person_name(header))}</h2><p>Patient ID {esc(str(header.get('PatientID', '')))}"
            f" &middot; born {esc(_date(header.get('PatientBirthDate')) or 'unknown')}"
            f" &middot; sex {esc(str(header.get('PatientSex') or 'unknown'))}</p>"
        )
        body.append(
            "<table><tr><th>Date</th><th>Description</th><th>Modality</th><th>Accession</th>"
            "<th>Series</th><th>Instances</th></tr>"
        )
        for study in patient.studies.values():
            s = study.header
            body.append(
                f"<tr><td>{esc(_date(s.get('StudyDate')))}</td>"
                f"<td>{esc(str(s.get('StudyDescription') or ''))}</td>"
                f"<td>{esc(_modalities(study))}</td><td>{esc(str(s.get('AccessionNumber') or ''))}</td>"
                f"<td>{len(study.series)}</td><td>{study.instance_count}</td></tr>"
            )
        body.append("</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #888;padding:.3em .6em;text-align:left}</style></head><body>\n"
        + "\n".join(body)
        + "\n<p>The images are in the DICOM folder; open DICOMDIR with a DICOM viewer.</p>"
        + "\n</body></html>\n"
    )
