"""Request dependencies shared by the DICOMweb routes, as named Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagebridge.services.archive import Archive


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _base_url(request: Request) -> str:
    """The DICOMweb root as the client sees it (PS3.18 §8.2: the Base URI)."""
    archive: Archive = request.app.state.archive
    if archive.settings.public_base_url:
        return archive.settings.public_base_url.rstrip("/") + "/dicomweb"
    return str(request.base_url).rstrip("/") + "/dicomweb"


ArchiveDep = Annotated[Archive, Depends(_archive)]
BaseUrl = Annotated[str, Depends(_base_url)]
