"""The DICOMweb root: every PS3.18 transaction this server offers, mounted at /dicomweb."""

from __future__ import annotations

from fastapi import APIRouter

from imagebridge.dicomweb import bulkdata, delete, frames, qido, rendered, stow, wado


def build_router() -> APIRouter:
    router = APIRouter(prefix="/dicomweb")
    for module in (qido, stow, wado, frames, rendered, bulkdata, delete):
        router.include_router(module.router)
    return router
