"""Synthetic DICOM data for the bench, generated with pydicom + numpy and cached on disk.

UIDs follow ``ROOT.TAG.KIND.N`` where TAG is a fixed-width 9-digit number. Replacing TAG by another
9-digit number in an instance's header gives a fresh, equally long set of UIDs without re-encoding,
which is how repeated STOW runs get new studies with byte-identical sizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


def file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
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
    ds.file_meta = file_meta(CT_IMAGE_STORAGE, sop_uid)
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
    grayscale(ds, pixels, bits_stored=12)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    return ds


def grayscale(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
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
    ds.file_meta = file_meta(MF_GRAYSCALE_WORD_SC, sop_uid)
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
    grayscale(ds, stack, bits_stored=12)
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 1064
    ds.WindowWidth = 400
    return ds


def batched(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
