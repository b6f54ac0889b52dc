"""The whole path once: STOW-RS, QIDO-RS, WADO-RS with dicomweb-client against a real server."""

from __future__ import annotations

import httpx
import pydicom
from dicomweb_client import DICOMwebClient

from imagebridge.web.server import BackgroundServer
from tests.samples import sample


def test_store_search_retrieve(dicomweb_url: str) -> None:
    client = DICOMwebClient(dicomweb_url)
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    client.store_instances([ds])
    studies = client.search_for_studies(search_filters={"PatientID": ds.PatientID})
    assert [s["0020000D"]["Value"][0] for s in studies] == [ds.StudyInstanceUID]
    got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert got.SOPInstanceUID == ds.SOPInstanceUID


def test_openapi_operation_ids_are_unique(server: BackgroundServer) -> None:
    """Routes serving GET and HEAD (or PUT and PATCH) still get one operationId per operation."""
    schema = httpx.get(f"{server.url}/openapi.json").json()
    ids = [
        op["operationId"] for item in schema["paths"].values() for op in item.values() if "operationId" in op
    ]
    assert len(ids) > 50 and len(ids) == len(set(ids))
    head = schema["paths"]["/dicomweb/studies/{study}"]
    get_id = head["get"]["operationId"]
    assert get_id == "retrieve_study_dicomweb_studies__study__get"  # the same in every process
    assert head["head"]["operationId"] == get_id.removesuffix("_get") + "_head"
