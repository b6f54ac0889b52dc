"""C-ECHO, C-FIND, C-MOVE, C-GET against DCMTK and pynetdicom peers; stored bytes come back unchanged."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

from imagebridge.config import Settings
from imagebridge.dicom.matching import Level
from imagebridge.dimse.peers import Peer
from imagebridge.dimse.scu import Scu, identifier
from imagebridge.dimse.server import DimseServer
from imagebridge.services.archive import Archive
from tests.dimse.conftest import AET, StoreScp, add_peer, dataset_bytes, need, pynetdicom_app, run

CT = "CT_small.dcm"


@pytest.fixture
def loaded(archive: Archive, dimse: DimseServer, sample_folder: Path, me: Peer) -> list[Path]:
    files = sorted(sample_folder.iterdir())
    assert not Scu(Settings(), "LOADER").send(me, files).failed
    return files


def _study(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def test_echoscu(dimse: DimseServer) -> None:
    need("echoscu")
    assert run("echoscu", "-aec", AET, "127.0.0.1", str(dimse.port)).returncode == 0
    assert pynetdicom_app("echoscu", "-aec", AET, "127.0.0.1", str(dimse.port)).returncode == 0


@pytest.mark.parametrize(
    ("level", "key"),
    [
        ("PATIENT", "PatientID"),
        ("STUDY", "StudyInstanceUID"),
        ("SERIES", "SeriesInstanceUID"),
        ("IMAGE", "SOPInstanceUID"),
    ],
)
def test_findscu_every_level(loaded: list[Path], dimse: DimseServer, level: str, key: str) -> None:
    need("findscu")
    ct = _study(next(p for p in loaded if p.name == CT))
    model = "-P" if level == "PATIENT" else "-S"
    keys = [f"QueryRetrieveLevel={level}", f"{key}={ct.get(key)}", "PatientName"]
    if level in ("SERIES", "IMAGE"):
        keys += [f"StudyInstanceUID={ct.StudyInstanceUID}"]
    if level == "IMAGE":
        keys += [f"SeriesInstanceUID={ct.SeriesInstanceUID}"]
    out = run(
        "findscu", model, "-aec", AET, *(a for k in keys for a in ("-k", k)), "127.0.0.1", str(dimse.port)
    )
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stderr.count("(Pending)") == 1, out.stderr[-3000:]
    assert str(ct.PatientName) in out.stderr
    wide = run("findscu", "-S", "-aec", AET, "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*",
               "127.0.0.1", str(dimse.port))  # fmt: skip
    assert wide.stderr.count("(Pending)") > 1


def test_find_answers_requested_keys_like_qido(loaded: list[Path], me: Peer) -> None:
    ct = _study(loaded[0] if loaded[0].name == CT else next(p for p in loaded if p.name == CT))
    query = identifier(
        Level.SERIES,
        [f"StudyInstanceUID={ct.StudyInstanceUID}", "Modality", "SeriesInstanceUID", "SeriesDescription"],
    )
    [found] = list(Scu(Settings(), "FINDER").find(me, query))
    assert found.SeriesInstanceUID == ct.SeriesInstanceUID
    assert found.Modality == "CT"
    assert "SeriesDescription" in found and found.QueryRetrieveLevel == "SERIES"


def test_find_with_bad_value_fails_with_a900(loaded: list[Path], me: Peer) -> None:
    query = identifier(Level.STUDY, ["StudyDate=not-a-date", "StudyInstanceUID"])
    with pytest.raises(Exception, match="0xA900"):
        list(Scu(Settings(), "FINDER").find(me, query))


def test_movescu_to_storescp_is_byte_identical(
    archive: Archive, loaded: list[Path], dimse: DimseServer, storescp: StoreScp
) -> None:
    need("movescu")
    add_peer(archive, "storescp", storescp.aet, storescp.port)
    ct = _study(next(p for p in loaded if p.name == CT))
    out = run(
        "movescu", "-S", "-aec", AET, "-aem", storescp.aet,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.StudyInstanceUID}",
        "127.0.0.1", str(dimse.port),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-1500:]
    received = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in storescp.files()}
    sent = {_study(p).SOPInstanceUID: p for p in loaded if _study(p).StudyInstanceUID == ct.StudyInstanceUID}
    assert set(received) == set(sent)
    for uid, path in sent.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path), path.name


def test_move_to_unknown_destination_is_a801(loaded: list[Path], me: Peer) -> None:
    ct = _study(next(p for p in loaded if p.name == CT))
    query = identifier(Level.STUDY, [f"StudyInstanceUID={ct.StudyInstanceUID}"])
    assert Scu(Settings(), "MOVER").move(me, query, "NOWHERE").status == 0xA801


def test_scu_get_of_every_sample_is_byte_identical(loaded: list[Path], me: Peer, tmp_path: Path) -> None:
    """Our SCU lists the instances first (C-FIND with Available Transfer Syntax UID), proposes a
    context per stored syntax, and writes what it receives as received."""
    client = Scu(Settings(), "GETTER")
    for study in sorted({_study(p).StudyInstanceUID for p in loaded}):
        result = client.get(me, identifier(Level.STUDY, [f"StudyInstanceUID={study}"]), tmp_path / "got")
        assert result.ok, hex(result.status)
    received = {dataset_bytes(p) for p in (tmp_path / "got").iterdir()}
    assert len(received) == len(loaded)
    for path in loaded:
        assert dataset_bytes(path) in received, path.name


@pytest.mark.parametrize(("name", "prefer"), [(CT, "+xe"), ("MR_small_RLE.dcm", "+xr")])
def test_getscu_is_byte_identical(
    loaded: list[Path], dimse: DimseServer, tmp_path: Path, name: str, prefer: str
) -> None:
    """DCMTK ``getscu`` proposes one context per storage class with its preferred syntax first."""
    need("getscu")
    got = tmp_path / "got"
    got.mkdir()
    ds = _study({p.name: p for p in loaded}[name])
    out = run(
        "getscu", "-S", "-aec", AET, prefer, "+B", "-k", "QueryRetrieveLevel=IMAGE",
        "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
        "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", "-od", str(got), "127.0.0.1", str(dimse.port),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-1500:]
    [received] = list(got.iterdir())
    assert dataset_bytes(received) == dataset_bytes({p.name: p for p in loaded}[name])


def test_getscu_uncompressed_only_gets_decompressed_copy(
    loaded: list[Path], dimse: DimseServer, tmp_path: Path
) -> None:
    """A requester that accepts only uncompressed data gets an RLE instance decoded (lossless)."""
    need("getscu")
    got = tmp_path / "got"
    got.mkdir()
    ds = _study({p.name: p for p in loaded}["MR_small_RLE.dcm"])
    out = run(
        "getscu", "-S", "-aec", AET, "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
        "-od", str(got), "127.0.0.1", str(dimse.port),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-1500:]
    [received] = list(got.iterdir())
    got = pydicom.dcmread(received)
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread({p.name: p for p in loaded}["MR_small_RLE.dcm"])
    assert (got.pixel_array == original.pixel_array).all()


def test_get_into_big_endian_only_fails_cleanly(
    loaded: list[Path], me: Peer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The retired big endian syntax is never produced: a failed sub-operation and a log line."""
    ds = _study({p.name: p for p in loaded}["MR_small_RLE.dcm"])
    ae = AE("BIGENDIAN")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRBigEndian)
    role = build_role(ds.SOPClassUID, scp_role=True)
    query = identifier(Level.STUDY, [f"StudyInstanceUID={ds.StudyInstanceUID}"])
    assoc = ae.associate(me.host, me.port, ae_title=AET, ext_neg=[role],
                         evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)])  # fmt: skip
    assert assoc.is_established
    try:
        statuses = [
            int(answer.Status)
            for answer, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert statuses[-1] == 0xA702  # all sub-operations failed (PS3.4 §C.4.3.1.4)
    assert any("accepted only [Explicit VR Big Endian]" in r.getMessage() for r in caplog.records)


def test_get_of_every_sample_by_pynetdicom_getscu(
    loaded: list[Path], dimse: DimseServer, tmp_path: Path
) -> None:
    ct = _study(next(p for p in loaded if p.name == CT))
    out = pynetdicom_app(
        "getscu", "-aec", AET, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.StudyInstanceUID}",
        "-od", str(tmp_path), "127.0.0.1", str(dimse.port),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-1500:]
    assert len(list(tmp_path.iterdir())) >= 1
