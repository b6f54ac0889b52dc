"""Delete a study, series or instance (the DICOMweb delete transaction, an administrator's operation)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from imagebridge.dicomweb.deps import ArchiveDep
from imagebridge.index.lookup import Target
from imagebridge.services import delete as delete_service
from imagebridge.services.archive import Archive

router = APIRouter(tags=["Delete"])


async def _delete(archive: Archive, target: Target) -> JSONResponse:
    count = await anyio.to_thread.run_sync(delete_service.delete, target, archive.catalog, archive.blobs)
    return JSONResponse({"deleted": target.describe(), "instances": count})


@router.delete("/studies/{study}", summary="Delete a study")
async def delete_study(archive: ArchiveDep, study: str) -> JSONResponse:
    return await _delete(archive, Target(study))


@router.delete("/studies/{study}/series/{series}", summary="Delete a series")
async def delete_series(archive: ArchiveDep, study: str, series: str) -> JSONResponse:
    return await _delete(archive, Target(study, series))


@router.delete("/studies/{study}/series/{series}/instances/{instance}", summary="Delete an instance")
async def delete_instance(archive: ArchiveDep, study: str, series: str, instance: str) -> JSONResponse:
    return await _delete(archive, Target(study, series, instance))
