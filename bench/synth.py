"""Synthetic DICOM data for the bench, generated with pydicom + numpy and cached on disk.

UIDs follow ``ROOT.TAG.KIND.N`` where TAG is a fixed-width 9-digit number. Replacing TAG by another
9-digit number in an instance's header gives a fresh, equally long set of UIDs without re-encoding,
which is how repeated STOW runs get new studies with byte-identical sizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.8.498.77"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
CACHE_VERSION = 1
SIZE = 512

CT_TAG = 100_000_000
BIG_TAG = 200_000_000
MULTIFRAME_TAG = 300_000_000
QIDO_TAG = 400_000_000
KIND_STUDY, KIND_SERIES, KIND_INSTANCE, KIND_FOR = 1, 2, 3, 4


def uid(tag: int, kind: int, n: int = 1) -> str:
    return f"{ROOT}.{tag}.{kind}.{n}"


@dataclass(frozen=True)
class StudyFiles:
    """A cached single-series study: its files in order and its UIDs (at the cached tag)."""

    tag: int
    files: tuple[Path, ...]
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def read_all(self) -> list[bytes]:
        return [p.read_bytes() for p in self.files]


def retag(data: bytes, old_tag: int, new_tag: int) -> bytes:
    """Replace the UID tag in the header (never in pixel data); the length stays the same."""
    old, new = f".{old_tag}.".encode(), f".{new_tag}.".encode()
    if len(old) != len(new):
        raise ValueError("UID tags must have the same number of digits")
    end = data.find(PIXEL_DATA_TAG)
    end = len(data) if end < 0 else end
    return data[:end].replace(old, new) + data[end:]


def retag_study(study: StudyFiles, new_tag: int) -> tuple[str, list[bytes]]:
    """The study's instances with fresh UIDs, in memory, and the new study UID."""
    return uid(new_tag, KIND_STUDY), [retag(b, study.tag, new_tag) for b in study.read_all()]


# --- pixel content -------------------------------------------------------------------------------


def _phantom_slice(z: float, noise: np.ndarray) -> np.ndarray:
    """A crude chest CT slice in stored values (HU + 1024, 12 bits): body, lungs, spine, table."""
    yy, xx = np.mgrid[-1 : 1 : SIZE * 1j, -1 : 1 : SIZE * 1j]
    hu = np.full((SIZE, SIZE), -1000.0)
    hu[(xx / 0.85) ** 2 + (yy / 0.62) ** 2 < 1] = 40.0
    lung_r = 0.22 + 0.08 * np.sin(np.pi * z)
    for cx in (-0.38, 0.38):
        hu[((xx - cx) / lung_r) ** 2 + ((yy + 0.05) / (lung_r * 1.4)) ** 2 < 1] = -850.0
    hu[xx**2 + (yy - 0.42) ** 2 < 0.09**2] = 700.0
    hu[(yy > 0.8) & (yy < 0.84)] = 200.0
    return np.clip(hu + 1024 + noise, 0, 4095).astype(np.uint16)


def _noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(-25, 26, size=(SIZE, SIZE), dtype=np.int16)


# --- CT series -----------------------------------------------------------------------------------


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _patient_study(ds: Dataset, tag: int, name: str, patient_id: str) -> None:
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600412"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = uid(tag, KIND_STUDY)
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"A{tag}"
    ds.ReferringPhysicianName = "REFERRER^RITA"
    ds.StudyID = "1"
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.Manufacturer = "imagebridge bench"
    ds.InstitutionName = "Synthetic Hospital"


def _ct_slice(tag: int, index: int, count: int, pixels: np.ndarray) -> Dataset:
    ds = Dataset()
    sop_uid = uid(tag, KIND_INSTANCE, index + 1)
    ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    _patient_study(ds, tag, "BENCH^CT^SERIES", f"BENCHCT{tag}")
    ds.Modality = "CT"
    ds.SeriesInstanceUID = uid(tag, KIND_SERIES)
    ds.SeriesNumber = 2
    ds.SeriesDescription = f"AXIAL 1.25mm {count} slices"
    ds.BodyPartExamined = "CHEST"
    ds.FrameOfReferenceUID = uid(tag, KIND_FOR)
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-250.0, -250.0, round(-index * 1.25, 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(-index * 1.25, 2)
    ds.SliceThickness = 1.25
    ds.PixelSpacing = [0.9765625, 0.9765625]
    ds.KVP = 120
    ds.XRayTubeCurrent = 250
    ds.ConvolutionKernel = "STANDARD"
    ds.AcquisitionNumber = 1
    _grayscale(ds, pixels, bits_stored=12)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    return ds


def _grayscale(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype("<u2").tobytes()


def ct_series(cache: Path, slices: int, tag: int = CT_TAG) -> StudyFiles:
    """A single-series axial CT of ``slices`` 512x512 12-bit slices, cached under ``cache``."""
    folder = cache / f"ct-v{CACHE_VERSION}-{tag}-{slices}"
    manifest = folder / "manifest.json"
    if not manifest.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(tag)
        for i in range(slices):
            pixels = _phantom_slice(i / max(slices - 1, 1), _noise(rng))
            _ct_slice(tag, i, slices, pixels).save_as(folder / f"{i + 1:05d}.dcm", enforce_file_format=True)
        manifest.write_text(json.dumps({"slices": slices}))
    files = tuple(folder / f"{i + 1:05d}.dcm" for i in range(slices))
    sops = tuple(uid(tag, KIND_INSTANCE, i + 1) for i in range(slices))
    return StudyFiles(tag, files, uid(tag, KIND_STUDY), uid(tag, KIND_SERIES), sops)


# --- multi-frame instance --------------------------------------------------------------------------


def multiframe(cache: Path, frames: int, tag: int = MULTIFRAME_TAG) -> StudyFiles:
    """One Multi-frame Grayscale Word Secondary Capture instance with ``frames`` 512x512 frames."""
    path = cache / f"multiframe-v{CACHE_VERSION}-{tag}-{frames}.dcm"
    if not path.exists():
        rng = np.random.default_rng(tag)
        stack = np.stack([_phantom_slice(i / max(frames - 1, 1), _noise(rng)) for i in range(frames)])
        tmp = path.with_suffix(".tmp")
        _multiframe_dataset(tag, stack).save_as(tmp, enforce_file_format=True)
        tmp.rename(path)
    return StudyFiles(tag, (path,), uid(tag, KIND_STUDY), uid(tag, KIND_SERIES), (uid(tag, KIND_INSTANCE),))


def _multiframe_dataset(tag: int, stack: np.ndarray) -> Dataset:
    ds = Dataset()
    sop_uid = uid(tag, KIND_INSTANCE)
    ds.file_meta = _file_meta(MF_GRAYSCALE_WORD_SC, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.SOPInstanceUID = sop_uid
    _patient_study(ds, tag, "BENCH^MULTI^FRAME", f"BENCHMF{tag}")
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesInstanceUID = uid(tag, KIND_SERIES)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.NumberOfFrames = stack.shape[0]
    ds.FrameIncrementPointer = (0x0018, 0x2005)
    ds.SliceLocationVector = [round(-i * 1.25, 2) for i in range(stack.shape[0])]
    _grayscale(ds, stack, bits_stored=12)
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 1064
    ds.WindowWidth = 400
    return ds


# --- many tiny instances for QIDO ----------------------------------------------------------------

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
    "study": uid(QIDO_TAG, KIND_STUDY, 9_999_991),
    "series": uid(QIDO_TAG, KIND_SERIES, 99_999_992),
    "sop": uid(QIDO_TAG, KIND_INSTANCE, 999_999_993),
}


def _tiny_template() -> TinyFields:
    p = _PLACEHOLDERS
    ds = Dataset()
    ds.file_meta = _file_meta(SECONDARY_CAPTURE, p["sop"])
    ds.SOPClassUID = SECONDARY_CAPTURE
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
    _grayscale(ds, np.arange(64, dtype=np.uint16).reshape(8, 8), bits_stored=16)
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
        "study": uid(QIDO_TAG, KIND_STUDY, 1_000_000 + study).encode(),
        "series": uid(QIDO_TAG, KIND_SERIES, 10_000_000 + i // INSTANCES_PER_SERIES).encode(),
        "sop": uid(QIDO_TAG, KIND_INSTANCE, 100_000_000 + i).encode(),
    }


def tiny_patient_id(i: int) -> str:
    """The Patient ID of tiny instance ``i`` (for exact-match QIDO queries)."""
    return f"P{1_000_000_00 + i // INSTANCES_PER_STUDY // STUDIES_PER_PATIENT}"


def tiny_studies(count: int) -> list[dict[str, str]]:
    """Values of each study that the first ``count`` tiny instances touch (to check QIDO answers)."""
    studies = -(-count // INSTANCES_PER_STUDY)
    return [
        {k: v.decode().strip() for k, v in _tiny_values(s * INSTANCES_PER_STUDY).items()}
        for s in range(studies)
    ]


def tiny_instances(start: int, stop: int) -> list[bytes]:
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


def batched(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
