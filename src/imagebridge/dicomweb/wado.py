"""WADO-RS: retrieve instances and metadata (PS3.18 §10.4).

``transfer-syntax=*`` streams the stored files unchanged: consecutive instances are read, framed,
into one buffer of up to 8 MiB in a worker thread while the previous buffer is being sent (one
thread hop and one socket write per batch, no copy between the file and the buffer); other
syntaxes are converted one instance at a time. When the server offers the ASGI
``http.response.zerocopy`` extension (``web/zerocopy.py``), stored files are not read at all:
each batch is only opened in a worker thread and handed to the server in one message, which
sends each part's framing and then the file with ``sendfile(2)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from imagebridge.dicom import dicomjson
from imagebridge.dicomweb import accept, caching, multipart
from imagebridge.dicomweb.deps import ArchiveDep, BaseUrl
from imagebridge.errors import StorageFailure
from imagebridge.index.lookup import Target
from imagebridge.services import retrieve
from imagebridge.services.archive import Archive
from imagebridge.web.zerocopy import EXTENSION as ZEROCOPY
from imagebridge.web.zerocopy import Part

router = APIRouter(tags=["WADO-RS"])

_DICOM = "application/dicom"
_JSON = ("application/dicom+json", "application/json")

_log = logging.getLogger(__name__)


async def _retrieve(request: Request, archive: Archive, target: Target) -> Response:
    ranges = accept.parse(request.headers.get("accept"))
    accept.choose(ranges, [_DICOM], multipart_only=True)
    wanted = accept.dicom_syntaxes(ranges)
    renditions = await anyio.to_thread.run_sync(_plan, archive, target, wanted)
    tag = caching.etag(*[f"{r.instance.blob_key}:{r.transfer_syntax}" for r in renditions])
    if (cached := caching.not_modified(request, tag)) is not None:
        return cached
    boundary = multipart.new_boundary()
    headers = caching.headers(tag)
    heads = _part_headers(boundary, renditions)
    if all(r.as_stored for r in renditions):
        length = sum(len(h) + r.instance.size + 2 for h, r in zip(heads, renditions, strict=True))
        headers["Content-Length"] = str(length + len(multipart.closing(boundary)))
    media_type = multipart.content_type(boundary, _DICOM)
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media_type)
    if "Content-Length" in headers and ZEROCOPY in request.scope.get("extensions", {}):
        return _StoredParts(archive, renditions, heads, boundary, headers, media_type)
    converted: dict[int, bytes] = {}
    if len(renditions) == 1 and not renditions[0].as_stored:
        # One instance: convert before answering, so that a failure is a 406, not a broken body.
        converted[0] = await anyio.to_thread.run_sync(retrieve.rendition_bytes, archive.blobs, renditions[0])
    body = _stream(archive, renditions, heads, boundary, converted)
    return StreamingResponse(body, media_type=media_type, headers=headers)


def _plan(archive: Archive, target: Target, wanted: list[str | None]) -> list[retrieve.Rendition]:
    """Look up and plan in one trip to a worker thread (a busy machine makes every trip cost)."""
    return retrieve.plan(archive.blobs, archive.lookup.instances(target), wanted)


def _part_headers(boundary: str, renditions: list[retrieve.Rendition]) -> list[bytes]:
    """Each part's header; one bytes object per transfer syntax, shared by its parts."""
    made: dict[str, bytes] = {}
    for syntax in {r.transfer_syntax for r in renditions}:
        made[syntax] = multipart.part_header(boundary, f"{_DICOM}; transfer-syntax={syntax}")
    return [made[r.transfer_syntax] for r in renditions]


async def _stream(
    archive: Archive,
    renditions: list[retrieve.Rendition],
    heads: list[bytes],
    boundary: str,
    converted: dict[int, bytes],
) -> AsyncIterator[bytes | memoryview]:
    """Stored parts go out in batches of up to ``retrieve.BATCH`` bytes, each read in a worker
    thread while the previous one is being sent; converted parts one at a time."""
    groups = retrieve.batches(renditions, heads)
    ahead = _read_ahead(archive, renditions, heads, groups[0])
    try:
        for index, group in enumerate(groups):
            current = ahead
            ahead = (
                _read_ahead(archive, renditions, heads, groups[index + 1])
                if index + 1 < len(groups)
                else None
            )
            if current is not None:
                for buffer in await current:
                    yield buffer
                continue
            number = group[0]
            body = converted.pop(number, None)
            if body is None:
                body = await anyio.to_thread.run_sync(
                    retrieve.rendition_bytes, archive.blobs, renditions[number]
                )
            yield heads[number] + body + multipart.CRLF
        yield multipart.closing(boundary)
    finally:
        if ahead is not None:
            ahead.cancel()


def _read_ahead(
    archive: Archive, renditions: list[retrieve.Rendition], heads: list[bytes], group: range
) -> asyncio.Future[list[bytes | memoryview]] | None:
    """Start reading a batch of stored parts in a worker thread (None for a part to convert)."""
    if not renditions[group[0]].as_stored:
        return None
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(None, retrieve.read_parts, archive.blobs, renditions, heads, group)


class _StoredParts(Response):
    """Stored parts sent by the server with ``http.response.zerocopy``: one message per batch of
    files with the framing before each, the next batch's files opened in a worker thread while
    this one is sent."""

    def __init__(
        self,
        archive: Archive,
        renditions: list[retrieve.Rendition],
        heads: list[bytes],
        boundary: str,
        headers: dict[str, str],
        media_type: str,
    ) -> None:
        super().__init__(headers=headers, media_type=media_type)
        self.archive, self.renditions, self.heads, self.boundary = archive, renditions, heads, boundary

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        groups = retrieve.batches(self.renditions, self.heads, retrieve.OPEN_BATCH, retrieve.OPEN_FILES)
        ahead: asyncio.Future[list[retrieve.Opened]] | None = self._open(groups[0]) if groups else None
        framing = b""
        try:
            for index, group in enumerate(groups):
                assert ahead is not None
                try:
                    files = await ahead
                except (StorageFailure, OSError) as exc:
                    _log.warning("WADO-RS response cut short, a stored file could not be opened: %s", exc)
                    return
                ahead = self._open(groups[index + 1]) if index + 1 < len(groups) else None
                framing = await self._send_files(send, group, files, framing)
            await send({"type": "http.response.body", "body": framing + multipart.closing(self.boundary)})
        except OSError:
            return  # the client went away (ASGI 2.4: send raises an OSError)
        finally:
            if ahead is not None:
                ahead.add_done_callback(_close_opened)

    def _open(self, group: range) -> asyncio.Future[list[retrieve.Opened]]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, retrieve.open_parts, self.archive.blobs, self.renditions, group)

    async def _send_files(
        self, send: Any, group: range, files: list[retrieve.Opened], framing: bytes
    ) -> bytes:
        """One message for the whole batch: each file after its framing (the previous CRLF and
        its part header)."""
        parts: list[Part] = []
        for number, fh in zip(group, files, strict=True):
            parts.append((framing + self.heads[number], fh, 0, self.renditions[number].instance.size))
            framing = multipart.CRLF
        try:
            await send({"type": ZEROCOPY, "parts": parts, "more_body": True})
        finally:
            retrieve.close_all(files)
        return framing


def _close_opened(future: asyncio.Future[list[retrieve.Opened]]) -> None:
    if not future.cancelled() and future.exception() is None:
        retrieve.close_all(future.result())


async def _metadata(request: Request, archive: Archive, base_url: str, target: Target) -> Response:
    accept.choose(accept.parse(request.headers.get("accept")), _JSON, single_ok=_JSON)
    rows = await anyio.to_thread.run_sync(lambda: list(archive.lookup.metadata(target)))
    text = "[" + ",".join(rows) + "]"
    tag = caching.etag(text)
    if (cached := caching.not_modified(request, tag)) is not None:
        return cached
    body = text.replace(f'"{dicomjson.BASE}/', f'"{base_url}/')
    return Response(body, media_type="application/dicom+json", headers=caching.headers(tag))


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
