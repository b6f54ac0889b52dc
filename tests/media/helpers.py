"""Helpers for media tests: store synthetic studies straight through the ingest path."""

from __future__ import annotations

from typing import Any

from imagebridge.services.archive import Archive
from tests.factory import make_instance, part10


def store_study(
    archive: Archive, *, series: int = 2, per_series: int = 3, pixels: int = 4, **attrs: Any
) -> tuple[str, list[str]]:
    """A study of ``series`` x ``per_series`` CT instances; returns its UID and the SOP Instance UIDs."""
    study: str | None = None
    sops: list[str] = []
    for number in range(1, series + 1):
        series_uid: str | None = None
        for index in range(1, per_series + 1):
            ds = make_instance(
                study=study,
                series=series_uid,
                pixels=pixels,
                SeriesNumber=number,
                InstanceNumber=index,
                StudyID="1",
                **attrs,
            )
            study, series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
            store_bytes(archive, part10(ds))
            sops.append(ds.SOPInstanceUID)
    assert study is not None
    return study, sops


def store_bytes(archive: Archive, data: bytes) -> None:
    spool = archive.ingest.spool()
    spool.write(data)
    archive.ingest.store(spool)
