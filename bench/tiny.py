"""Many tiny (8x8) instances for the QIDO-RS rows: 10 per study, 2 studies per patient.

One instance is encoded with pydicom as a template; every other instance is that template with its
varying values (names, IDs, dates, UIDs; all fixed-width) sliced in, so 100 000 take about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset

from bench import synth

SURNAMES = (
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
)
GIVEN = (
    "ANNA",
    "BEN",
    "CARLA",
    "DAVID",
    "EMMA",
    "FELIX",
    "GRETA",
    "HUGO",
    "IRIS",
    "JONAS",
    "KARIN",
    "LUKAS",
    "MARIA",
    "NOAH",
    "OLGA",
    "PAUL",
    "ROSA",
    "SVEN",
    "TINA",
    "URS",
)
MODALITIES = ("CT", "MR", "CR", "US")
INSTANCES_PER_STUDY = 10
INSTANCES_PER_SERIES = 5
STUDIES_PER_PATIENT = 2
NAME_WIDTH = 20


@dataclass(frozen=True)
class TinyFields:
    """Where each varying value sits in the encoded template, so instances are built by slicing."""

    template: bytes
    slots: tuple[tuple[int, int, str], ...]  # (offset, length, field name), sorted by offset


_PLACEHOLDERS: dict[str, str] = {
    "name": "Q" * NAME_WIDTH,
    "pid": "PQQQQQQQQQ",
    "acc": "AQQQQQQQQQ",
    "study_date": "19010203",
    "modality": "OT",
    "study": synth.uid(synth.QIDO_TAG, synth.KIND_STUDY, 9_999_991),
    "series": synth.uid(synth.QIDO_TAG, synth.KIND_SERIES, 99_999_992),
    "sop": synth.uid(synth.QIDO_TAG, synth.KIND_INSTANCE, 999_999_993),
}


def _tiny_template() -> TinyFields:
    p = _PLACEHOLDERS
    ds = Dataset()
    ds.file_meta = synth.file_meta(synth.SECONDARY_CAPTURE, p["sop"])
    ds.SOPClassUID = synth.SECONDARY_CAPTURE
    ds.SOPInstanceUID = p["sop"]
    ds.StudyDate, ds.StudyTime = p["study_date"], "083000"
    ds.AccessionNumber = p["acc"]
    ds.Modality = p["modality"]
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.PatientName, ds.PatientID = p["name"], p["pid"]
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = p["study"], p["series"]
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    synth.grayscale(ds, np.arange(64, dtype=np.uint16).reshape(8, 8), bits_stored=16)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    template = buf.getvalue()
    slots: list[tuple[int, int, str]] = []
    for name, value in p.items():
        raw = value.encode()
        start, expected = 0, 2 if name == "sop" else 1
        for _ in range(expected):
            start = template.index(raw, start)
            slots.append((start, len(raw), name))
            start += len(raw)
        if template.count(raw) != expected:
            raise AssertionError(f"placeholder {name} is not unique in the template")
    return TinyFields(template, tuple(sorted(slots)))


def _tiny_values(i: int) -> dict[str, bytes]:
    study = i // INSTANCES_PER_STUDY
    patient = study // STUDIES_PER_PATIENT
    name = f"{SURNAMES[patient % len(SURNAMES)]}^{GIVEN[(patient // len(SURNAMES)) % len(GIVEN)]}"
    day = date(2015, 1, 1) + timedelta(days=(study * 7919) % 3650)
    return {
        "name": name.ljust(NAME_WIDTH).encode(),
        "pid": f"P{1_000_000_00 + patient}".encode(),
        "acc": f"A{1_000_000_00 + study}".encode(),
        "study_date": day.strftime("%Y%m%d").encode(),
        "modality": MODALITIES[study % len(MODALITIES)].encode(),
        "study": synth.uid(synth.QIDO_TAG, synth.KIND_STUDY, 1_000_000 + study).encode(),
        "series": synth.uid(
            synth.QIDO_TAG, synth.KIND_SERIES, 10_000_000 + i // INSTANCES_PER_SERIES
        ).encode(),
        "sop": synth.uid(synth.QIDO_TAG, synth.KIND_INSTANCE, 100_000_000 + i).encode(),
    }


def patient_id(i: int) -> str:
    """The Patient ID of tiny instance ``i`` (for exact-match QIDO queries)."""
    return f"P{1_000_000_00 + i // INSTANCES_PER_STUDY // STUDIES_PER_PATIENT}"


def studies(count: int) -> list[dict[str, str]]:
    """Values of each study that the first ``count`` tiny instances touch (to check QIDO answers)."""
    studies = -(-count // INSTANCES_PER_STUDY)
    return [
        {k: v.decode().strip() for k, v in _tiny_values(s * INSTANCES_PER_STUDY).items()}
        for s in range(studies)
    ]


def instances(start: int, stop: int) -> list[bytes]:
    """Tiny 8x8 instances number ``start``..``stop-1``: 10 per study, 2 studies per patient."""
    fields = _tiny_template()
    out: list[bytes] = []
    for i in range(start, stop):
        values = _tiny_values(i)
        out.append(_render(fields, values))
    return out


def _render(fields: TinyFields, values: dict[str, bytes]) -> bytes:
    parts: list[bytes] = []
    pos = 0
    for offset, length, name in fields.slots:
        value = values[name]
        if len(value) != length:
            raise AssertionError(f"{name} value {value!r} does not fit {length} bytes")
        parts += [fields.template[pos:offset], value]
        pos = offset + length
    parts.append(fields.template[pos:])
    return b"".join(parts)
