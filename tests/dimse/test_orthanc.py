"""Archive to archive with Debian's Orthanc: C-MOVE from Orthanc into imagebridge, and from
imagebridge into Orthanc, checking that the dataset bytes arrive as they left."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from imagebridge.config import Settings
from imagebridge.dicom.matching import Level
from imagebridge.dimse.peers import Peer
from imagebridge.dimse.scu import Scu, identifier
from imagebridge.index.lookup import Target
from imagebridge.services.archive import Archive
from tests.dimse.conftest import AET, Listener, add_peer, dataset_bytes, free_port

ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_AET = "ORTHANC"
MOVED = ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm")
"""Explicit VR LE, RLE, JPEG 2000 and JPEG baseline; two of them share a study."""


class Orthanc:
    """A throw-away Orthanc (PS3.4 Q/R SCP and storage SCP) knowing imagebridge as a modality."""

    def __init__(self, folder: Path, our_port: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "imagebridge-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": {"imagebridge": [AET, "127.0.0.1", our_port]},
            "StorageCompression": False,
            "SaveJobs": False,
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = (folder / "orthanc.log").open("w")
        self.proc = subprocess.Popen(
            [str(ORTHANC), str(folder / "orthanc.json")], stdout=self.log, stderr=self.log
        )
        self._wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _wait(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}; see {self.log.name}")
            try:
                self.rest("GET", "/system")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Orthanc did not answer on its REST API within 20 s")

    def rest(self, method: str, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = answer.read()
        return json.loads(data) if answer.headers.get_content_type() == "application/json" else data

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def files(self) -> dict[str, bytes]:
        """SOP Instance UID -> the Part 10 file Orthanc keeps."""
        found = {}
        for orthanc_id in self.rest("GET", "/instances"):
            tags = self.rest("GET", f"/instances/{orthanc_id}/simplified-tags")
            found[tags["SOPInstanceUID"]] = self.rest("GET", f"/instances/{orthanc_id}/file")
        return found


@pytest.fixture
def orthanc_and_us(lone: Archive, listener: Listener, tmp_path: Path) -> Iterator[tuple[Orthanc, Peer, Peer]]:
    """Orthanc and the listener, each a configured peer of the other."""
    if not ORTHANC.is_file():
        pytest.skip(f"{ORTHANC} is not installed (apt-get install orthanc; `make test` does)")
    # Timeouts a busy CI machine cannot overrun (the tiny defaults are for the timeout tests).
    server = listener(allow_any_caller=False, dicom_acse_timeout=10.0, dicom_network_timeout=10.0)
    orthanc = Orthanc(tmp_path / "orthanc", server.port)
    try:
        peer = add_peer(lone, "orthanc", ORTHANC_AET, orthanc.dicom_port)
        us = add_peer(lone, "self", "MOVER", 104)  # our own SCU calls in as MOVER
        yield orthanc, peer, Peer("imagebridge", AET, "127.0.0.1", server.port, us.tls)
    finally:
        orthanc.stop()


def without_trailing_padding(data: bytes) -> bytes:
    """Dataset bytes as DCMTK sends them: without Data Set Trailing Padding (FFFC,FFFC), which
    PS3.5 §7.6 lets any application drop."""
    at = data.rfind(b"\xfc\xff\xfc\xff")
    return data[:at] if at > 0 else data


def same_dataset(got: Path, original: Path) -> bool:
    """Whether ``got`` holds ``original``'s dataset bytes; if not, it must still hold the same
    elements in the same transfer syntax, pixel data included. DCMTK (inside Orthanc) re-encodes
    sequences and items with explicit lengths when it sends or stores them."""
    sent = dataset_bytes(original)
    if dataset_bytes(got) in (sent, without_trailing_padding(sent)):
        return True
    ours, theirs = pydicom.dcmread(got), pydicom.dcmread(original)
    assert ours.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID, original.name
    assert ours == theirs, original.name
    return False


def _on_disk(sample_folder: Path) -> dict[str, Path]:
    return {
        pydicom.dcmread(sample_folder / n, stop_before_pixels=True).SOPInstanceUID: sample_folder / n
        for n in MOVED
    }


def test_move_from_orthanc_into_imagebridge(
    lone: Archive, orthanc_and_us: tuple[Orthanc, Peer, Peer], sample_folder: Path
) -> None:
    orthanc, orthanc_peer, _us = orthanc_and_us
    originals = _on_disk(sample_folder)
    for path in originals.values():
        assert orthanc.rest("POST", "/instances", path.read_bytes())["Status"] == "Success"
    client = Scu(Settings(), "MOVER")
    for study in sorted(
        {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in originals.values()}
    ):
        result = client.move(orthanc_peer, identifier(Level.STUDY, [f"StudyInstanceUID={study}"]), AET)
        assert result.ok and result.failed == 0, result
    identical = set()
    for uid, path in originals.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        [instance] = lone.lookup.instances(Target(ds.StudyInstanceUID, ds.SeriesInstanceUID, uid))
        stored = lone.blobs.path(instance.blob_key)
        assert stored is not None
        if same_dataset(stored, path):
            identical.add(path.name)
    assert identical >= {"CT_small.dcm", "MR_small_RLE.dcm"}


def test_move_from_imagebridge_into_orthanc(
    lone: Archive, orthanc_and_us: tuple[Orthanc, Peer, Peer], sample_folder: Path, tmp_path: Path
) -> None:
    orthanc, _orthanc_peer, us = orthanc_and_us
    originals = _on_disk(sample_folder)
    for path in originals.values():
        lone.ingest.store_file(path)
    client = Scu(Settings(), "MOVER")
    for study in sorted(
        {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in originals.values()}
    ):
        result = client.move(us, identifier(Level.STUDY, [f"StudyInstanceUID={study}"]), ORTHANC_AET)
        assert result.ok and result.completed >= 1, result
    kept = orthanc.files()
    assert set(kept) == set(originals)
    identical = set()
    for uid, path in originals.items():
        (tmp_path / f"{uid}.dcm").write_bytes(kept[uid])
        if same_dataset(tmp_path / f"{uid}.dcm", path):
            identical.add(path.name)
    assert identical >= {"CT_small.dcm", "MR_small_RLE.dcm"}


def test_get_from_orthanc(
    orthanc_and_us: tuple[Orthanc, Peer, Peer], sample_folder: Path, tmp_path: Path
) -> None:
    """Orthanc does not say a stored syntax in C-FIND, so our SCU proposes the usual ones one by one."""
    orthanc, orthanc_peer, _us = orthanc_and_us
    originals = _on_disk(sample_folder)
    for path in originals.values():
        orthanc.rest("POST", "/instances", path.read_bytes())
    client = Scu(Settings(), "MOVER")
    for study in sorted(
        {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in originals.values()}
    ):
        result = client.get(
            orthanc_peer, identifier(Level.STUDY, [f"StudyInstanceUID={study}"]), tmp_path / "got"
        )
        assert result.ok and result.failed == 0, result
    identical = {
        path.name for uid, path in originals.items() if same_dataset(tmp_path / "got" / f"{uid}.dcm", path)
    }
    assert identical >= {"CT_small.dcm", "MR_small_RLE.dcm"}
