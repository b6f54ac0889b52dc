"""Build local and outside instances and import them from a source."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imagebridge.services import importer
from imagebridge.services.archive import Archive
from imagebridge.services.reconcile import Reconciler, SourceImport, Sources, reconciler_for
from tests.factory import make_instance, part10

SOURCE = "north"
SOURCE_ISSUER = "NORTH-HOSP"
HEALTH_CARD = "ON-HCN"


def store_local(archive: Archive, **attrs: Any) -> Dataset:
    """A local instance, stored the ordinary way (as STOW-RS or C-STORE would)."""
    ds = make_instance(**attrs)
    archive.ingest.store_stream(io.BytesIO(part10(ds)))
    return ds


def outside(study: str | None = None, **attrs: Any) -> Dataset:
    """An instance as a disc from another hospital would hold it."""
    values: dict[str, Any] = {"AccessionNumber": "A1001", "PatientID": "N-778", **attrs}
    return make_instance(study=study or generate_uid(), **values)


def health_card(number: str) -> list[Dataset]:
    item = Dataset()
    item.PatientID = number
    item.IssuerOfPatientID = HEALTH_CARD
    item.TypeOfPatientID = "TEXT"
    return [item]


def candidate(ds: Dataset, name: str = "disc/IMG0001") -> importer.Candidate:
    data = part10(ds)

    @contextmanager
    def opener() -> Iterator[io.BytesIO]:
        yield io.BytesIO(data)

    def open_() -> AbstractContextManager[io.BytesIO]:
        return opener()

    return importer.Candidate(name, len(data), open_)  # type: ignore[arg-type]


def add_source(archive: Archive, prefix: str | None = None) -> Reconciler:
    reconciler = reconciler_for(archive)
    Sources(reconciler.records, archive.settings).add(SOURCE, SOURCE_ISSUER, prefix)
    return reconciler


def import_all(archive: Archive, datasets: list[Dataset], source: str = SOURCE) -> importer.Summary:
    reconciler = reconciler_for(archive)
    chosen = Sources(reconciler.records, archive.settings).get(source)
    summary = importer.Summary()
    for n, ds in enumerate(datasets):
        importer.import_candidate(
            archive.ingest,
            candidate(ds, f"disc/IMG{n:04d}"),
            summary,
            source=SourceImport(reconciler, chosen),
        )
    return summary
