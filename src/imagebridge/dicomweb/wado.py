"""WADO-RS: retrieve instances and metadata (PS3.18 §10.4).

``transfer-syntax=*`` streams the stored files unchanged, in 1 MiB chunks read
off the event loop; other syntaxes are converted one instance at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from imagebridge.dicom import dicomjson
from imagebridge.dicomweb import accept, multipart
from imagebridge.dicomweb.deps import ArchiveDep, BaseUrl
from imagebridge.index.lookup import Target
from imagebridge.services import retrieve
from imagebridge.services.archive import Archive

router = APIRouter(tags=["WADO-RS"])

_DICOM = "application/dicom"
_JSON = ("application/dicom+json", "application/json")


def _etag(parts: list[str]) -> str:
    return '"' + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str) -> bool:
    return etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]


async def _retrieve(request: Request, archive: Archive, target: Target) -> Response:
    choice = accept.choose(accept.parse(request.headers.get("accept")), [_DICOM], multipart_only=True)
    instances = await anyio.to_thread.run_sync(archive.lookup.instances, target)
    renditions = retrieve.plan(instances, choice.transfer_syntax)
    etag = _etag([f"{r.instance.blob_key}:{r.transfer_syntax}" for r in renditions])
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    boundary = multipart.new_boundary()
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate"}
    heads = [
        multipart.part_header(boundary, f"{_DICOM}; transfer-syntax={r.transfer_syntax}") for r in renditions
    ]
    if all(r.as_stored for r in renditions):
        length = sum(len(h) + r.instance.size + 2 for h, r in zip(heads, renditions, strict=True))
        headers["Content-Length"] = str(length + len(multipart.closing(boundary)))
    media_type = multipart.content_type(boundary, _DICOM)
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media_type)
    body = _stream(archive, renditions, heads, boundary)
    return StreamingResponse(body, media_type=media_type, headers=headers)


async def _stream(
    archive: Archive, renditions: list[retrieve.Rendition], heads: list[bytes], boundary: str
) -> AsyncIterator[bytes]:
    for head, rendition in zip(heads, renditions, strict=True):
        yield head
        if rendition.as_stored:
            with archive.blobs.open(rendition.instance.blob_key) as fh:
                while data := await anyio.to_thread.run_sync(fh.read, retrieve.CHUNK):
                    yield data
        else:
            yield await anyio.to_thread.run_sync(retrieve.rendition_bytes, archive.blobs, rendition)
        yield multipart.CRLF
    yield multipart.closing(boundary)


async def _metadata(request: Request, archive: Archive, base_url: str, target: Target) -> Response:
    accept.choose(accept.parse(request.headers.get("accept")), _JSON, single_ok=_JSON)
    rows = await anyio.to_thread.run_sync(lambda: list(archive.lookup.metadata(target)))
    text = "[" + ",".join(rows) + "]"
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    body = text.replace(f'"{dicomjson.BASE}/', f'"{base_url}/')
    return Response(body, media_type="application/dicom+json", headers={"ETag": etag})


@router.api_route("/studies/{study}", methods=["GET", "HEAD"], summary="Retrieve a study")
async def retrieve_study(request: Request, archive: ArchiveDep, study: str) -> Response:
    return await _retrieve(request, archive, Target(study))


@router.api_route("/studies/{study}/series/{series}", methods=["GET", "HEAD"], summary="Retrieve a series")
async def retrieve_series(request: Request, archive: ArchiveDep, study: str, series: str) -> Response:
    return await _retrieve(request, archive, Target(study, series))


@router.api_route(
    "/studies/{study}/series/{series}/instances/{instance}",
    methods=["GET", "HEAD"],
    summary="Retrieve an instance",
)
async def retrieve_instance(
    request: Request, archive: ArchiveDep, study: str, series: str, instance: str
) -> Response:
    return await _retrieve(request, archive, Target(study, series, instance))


@router.api_route("/studies/{study}/metadata", methods=["GET", "HEAD"], summary="Study metadata")
async def study_metadata(request: Request, archive: ArchiveDep, base_url: BaseUrl, study: str) -> Response:
    return await _metadata(request, archive, base_url, Target(study))


@router.api_route(
    "/studies/{study}/series/{series}/metadata", methods=["GET", "HEAD"], summary="Series metadata"
)
async def series_metadata(
    request: Request, archive: ArchiveDep, base_url: BaseUrl, study: str, series: str
) -> Response:
    return await _metadata(request, archive, base_url, Target(study, series))


@router.api_route(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    methods=["GET", "HEAD"],
    summary="Instance metadata",
)
async def instance_metadata(
    request: Request, archive: ArchiveDep, base_url: BaseUrl, study: str, series: str, instance: str
) -> Response:
    return await _metadata(request, archive, base_url, Target(study, series, instance))
