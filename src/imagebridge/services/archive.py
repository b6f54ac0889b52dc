"""The archive's objects wired together once from Settings; every surface receives one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from imagebridge.audit import log as audit_log
from imagebridge.audit.store import AuditStore
from imagebridge.config import Settings
from imagebridge.errors import StorageFailure
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
        """Flush the access log, then release the index (nothing is recorded here afterwards)."""
        store = AuditStore.close_of(self.engine)
        if store is not None:
            audit_log.detach(store)
        self.catalog.close()
        self.engine.dispose()


def open_archive(settings: Settings, *, upgrade: bool = True) -> Archive:
    """Open the index and the blob store; ``upgrade`` brings the schema up to date first,
    otherwise a schema that is behind is an error that says what to run."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.effective_database_url)
    if upgrade:
        db.upgrade(engine)
    elif db.current_revision(engine) != db.head_revision():
        engine.dispose()
        raise StorageFailure(
            "the index schema is not up to date; run 'imagebridge db upgrade' "
            "(with the same --database-url) before starting the server"
        )
    blobs = FileBlobStore(settings.blob_dir, direct=settings.direct_writes)
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
