"""C-STORE SCP with real senders: each file arrives as sent, compressed ones still compressed.

DCMTK's ``dcmsend`` re-encodes a file's dataset while sending it (group lengths,
item lengths), so byte identity against the files on disk is asserted with a sender
that sends file bytes unchanged (our SCU); with ``dcmsend`` the transfer syntax and the
encapsulated pixel data must be unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import UID

from imagebridge.config import Settings
from imagebridge.dimse.peers import Peer
from imagebridge.dimse.scu import Scu
from imagebridge.dimse.server import DimseServer
from imagebridge.index.lookup import StoredInstance, Target
from imagebridge.services.archive import Archive
from tests.dimse.conftest import AET, SAMPLES, dataset_bytes, need, pynetdicom_app, run, stored_dataset_bytes


def stored(archive: Archive, path: Path) -> StoredInstance:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    [instance] = archive.lookup.instances(
        Target(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    )
    return instance


def assert_stored_as_on_disk(archive: Archive, paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        got = stored_dataset_bytes(archive, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert got == dataset_bytes(path), f"{path.name} was not stored as sent"


def test_dcmsend_folder_with_compressed_files(
    archive: Archive, dimse: DimseServer, sample_folder: Path
) -> None:
    need("dcmsend")
    out = run(
        "dcmsend",
        "-aet",
        "MODALITY",
        "-aec",
        AET,
        "127.0.0.1",
        str(dimse.port),
        "--scan-directories",
        str(sample_folder),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    files = sorted(sample_folder.iterdir())
    assert len(files) == len(SAMPLES)
    for path in files:
        instance = stored(archive, path)
        original = pydicom.dcmread(path)
        syntax = UID(original.file_meta.TransferSyntaxUID)
        if syntax.is_compressed and not syntax.is_deflated:
            assert instance.transfer_syntax == syntax, path.name
            blob = archive.blobs.path(instance.blob_key)
            assert pydicom.dcmread(blob).PixelData == original.PixelData, path.name


def test_scu_send_is_byte_identical(
    archive: Archive, dimse: DimseServer, sample_folder: Path, me: Peer
) -> None:
    files = sorted(sample_folder.iterdir())
    result = Scu(Settings(), "SENDER").send(me, files)
    assert (result.sent, result.failed) == (len(files), [])
    assert_stored_as_on_disk(archive, files)
    assert {stored(archive, p).transfer_syntax for p in files} >= {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.91",
    }


def test_pynetdicom_storescu(archive: Archive, dimse: DimseServer, sample_folder: Path) -> None:
    path = sample_folder / "CT_small.dcm"
    out = pynetdicom_app("storescu", "-aec", AET, "127.0.0.1", str(dimse.port), str(path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert stored(archive, path).sop_uid == pydicom.dcmread(path).SOPInstanceUID


def test_same_instance_twice_is_success(archive: Archive, dimse: DimseServer, sample_folder: Path) -> None:
    need("dcmsend")
    for _ in range(2):
        out = run("dcmsend", "-aec", AET, "127.0.0.1", str(dimse.port), str(sample_folder / "CT_small.dcm"))
        assert out.returncode == 0, out.stderr[-1000:]
