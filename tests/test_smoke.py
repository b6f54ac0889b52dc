"""The whole path once: STOW-RS, QIDO-RS, WADO-RS with dicomweb-client against a real server."""

from __future__ import annotations

import pydicom
from dicomweb_client import DICOMwebClient

from tests.samples import sample


def test_store_search_retrieve(dicomweb_url: str) -> None:
    client = DICOMwebClient(dicomweb_url)
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    client.store_instances([ds])
    studies = client.search_for_studies(search_filters={"PatientID": ds.PatientID})
    assert [s["0020000D"]["Value"][0] for s in studies] == [ds.StudyInstanceUID]
    got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert got.SOPInstanceUID == ds.SOPInstanceUID
