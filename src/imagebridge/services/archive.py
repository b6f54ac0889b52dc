"""The archive's objects wired together once from Settings; every surface receives one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from imagebridge.config import Settings
from imagebridge.index import db
from imagebridge.index.catalog import Catalog
from imagebridge.index.lookup import Lookup
from imagebridge.services.ingest import Ingest
from imagebridge.storage.fs import FileBlobStore


@dataclass
class Archive:
    settings: Settings
    engine: Engine
    blobs: FileBlobStore
    catalog: Catalog
    lookup: Lookup
    ingest: Ingest

    def close(self) -> None:
        self.engine.dispose()


def open_archive(settings: Settings, *, upgrade: bool = True) -> Archive:
    """Open (and, unless told otherwise, upgrade) the index and the blob store."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.effective_database_url)
    if upgrade:
        db.upgrade(engine)
    blobs = FileBlobStore(settings.blob_dir)
    catalog = Catalog(engine)
    return Archive(
        settings=settings,
        engine=engine,
        blobs=blobs,
        catalog=catalog,
        lookup=Lookup(engine),
        ingest=Ingest(
            blobs, catalog, replace=settings.replace_on_conflict, bulk_threshold=settings.bulkdata_threshold
        ),
    )
