"""Delete a study, series or instance: index first, then the blobs it no longer references."""

from __future__ import annotations

import logging

from imagebridge.errors import NotFound
from imagebridge.index.catalog import Catalog
from imagebridge.index.lookup import Target
from imagebridge.services.ingest import release
from imagebridge.storage.base import BlobStore

log = logging.getLogger(__name__)


def delete(target: Target, catalog: Catalog, blobs: BlobStore) -> int:
    """Remove ``target``; returns how many instances went. A crash between the steps
    leaves at worst an unreferenced blob, never an index row without its bytes; a blob the
    index names again by then (the same instance stored meanwhile, or bytes an import keeps)
    stays."""
    removed = catalog.remove(target.study_uid, target.series_uid, target.sop_uid)
    if removed.instances == 0:
        raise NotFound(f"{target.describe()} is not in the archive")
    for key, sop_uid in removed.blobs:
        release(blobs, catalog, key, sop_uid)
    log.info("deleted %s (%d instances)", target.describe(), removed.instances)
    return removed.instances
