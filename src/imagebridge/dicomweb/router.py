"""The DICOMweb root: every PS3.18 transaction this server offers, mounted at /dicomweb."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from imagebridge.dicomweb import bulkdata, delete, frames, qido, rendered, stow, wado
from imagebridge.dicomweb.deps import authorize


def build_router() -> APIRouter:
    """Every route behind :func:`~imagebridge.dicomweb.deps.authorize` (a valid token, and the policy)."""
    router = APIRouter(prefix="/dicomweb", dependencies=[Depends(authorize)])
    for module in (qido, stow, wado, frames, rendered, bulkdata, delete):
        router.include_router(module.router)
    return router
