"""Small synthetic DICOM instances with controlled attributes, built with pydicom."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def make_instance(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    pixels: int = 4,
    **attrs: Any,
) -> Dataset:
    """A valid CT image of ``pixels`` by ``pixels`` 16-bit pixels; keyword arguments set attributes."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = "ID-" + ds.StudyInstanceUID[-6:]
    ds.PatientName = "Test^Patient"
    ds.Modality = "CT"
    ds.StudyDate = "20200101"
    ds.StudyTime = "120000"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = pixels
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(pixels * pixels, dtype="<u2").tobytes()
    for keyword, value in attrs.items():
        if value is not None:
            setattr(ds, keyword, value)
        elif keyword in ds:
            delattr(ds, keyword)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def part10(ds: Dataset, *, strict: bool = True) -> bytes:
    """``ds`` written as a Part 10 file; ``strict=False`` lets broken File Meta through."""
    buffer = io.BytesIO()
    if not strict:
        buffer.write(b"\x00" * 128 + b"DICM")
    ds.save_as(buffer, enforce_file_format=strict)
    return buffer.getvalue()


def multipart(parts: list[bytes], boundary: str = "b0undary", part_type: str = "application/dicom") -> bytes:
    """A multipart/related body with one part per item of ``parts``."""
    body = b""
    for data in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def stow_type(boundary: str = "b0undary") -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'
