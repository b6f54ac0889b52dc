"""WADO-RS bulk data (PS3.18 §10.4, §F.2.6): the targets of the BulkDataURIs in metadata.

Native pixel data is streamed straight from its stored offsets; encapsulated pixel data is sent
as a multipart of its frames (negotiated like ``/frames``); other values are read with pydicom.
A single-part ``application/octet-stream`` answer honours ``Range: bytes=...`` (RFC 9110 §14).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from imagebridge.dicom import bulkdata, syntaxes
from imagebridge.dicomweb import accept, caching, multipart
from imagebridge.dicomweb.deps import ArchiveDep
from imagebridge.dicomweb.frames import respond_frames
from imagebridge.errors import StorageFailure
from imagebridge.index.lookup import StoredInstance, Target
from imagebridge.services import retrieve
from imagebridge.services.archive import Archive

router = APIRouter(tags=["WADO-RS"])

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Value:
    """A bulk value: a slice of the stored file, or bytes prepared in memory."""

    path: Path
    offset: int = 0
    length: int = 0
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.length

    async def chunks(self, start: int, stop: int) -> AsyncIterator[bytes]:
        if self.data is not None:
            yield self.data[start:stop]
            return
        with self.path.open("rb") as fp:
            fp.seek(self.offset + start)
            remaining = stop - start
            while remaining > 0:
                data = await anyio.to_thread.run_sync(fp.read, min(retrieve.CHUNK, remaining))
                if not data:
                    raise StorageFailure("the stored instance is shorter than its index says")
                remaining -= len(data)
                yield data


def _value(archive: Archive, instance: StoredInstance, tag_path: bulkdata.TagPath) -> Value:
    path = archive.blobs.path(instance.blob_key)
    if path is None:
        raise StorageFailure("this blob store cannot read bulk data in place")
    index = instance.frame_index
    native = (
        syntaxes.is_native(instance.transfer_syntax) and instance.transfer_syntax != "1.2.840.10008.1.2.2"
    )
    if tag_path.is_pixel_data and native and index is not None and index.native_offset is not None:
        assert index.frame_length is not None
        return Value(path, index.native_offset, index.count * index.frame_length)
    return Value(path, data=bulkdata.element_bytes(path, tag_path))


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` for one satisfiable range; None to send everything.

    Malformed or multiple ranges are ignored, as RFC 9110 §14.2 allows; an unsatisfiable one
    raises :class:`Unsatisfiable`."""
    match = _RANGE.match((header or "").replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(size)
        return max(size - suffix, 0), size
    start = int(first)
    stop = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        raise Unsatisfiable(size)
    return start, stop


class Unsatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


async def _respond(request: Request, archive: Archive, target: Target, tag_text: str) -> Response:
    tag_path = bulkdata.parse_tag_path(tag_text)
    ranges = accept.parse(request.headers.get("accept"))
    (instance,) = await anyio.to_thread.run_sync(archive.lookup.instances, target)
    stored = instance.transfer_syntax
    if tag_path.is_pixel_data and stored in syntaxes.FRAME_MEDIA_TYPES:
        return await respond_frames(request, archive, target, None)
    choice = accept.choose(ranges, [accept.OCTET_STREAM], single_ok=[accept.OCTET_STREAM])
    value = await anyio.to_thread.run_sync(_value, archive, instance, tag_path)
    tag = caching.etag(instance.blob_key, tag_path, choice.multipart)
    if (cached := caching.not_modified(request, tag)) is not None:
        return cached
    headers = caching.headers(tag)
    if choice.multipart:
        return _multipart(request, value, headers)
    return _single(request, value, headers)


def _single(request: Request, value: Value, headers: dict[str, str]) -> Response:
    headers["Accept-Ranges"] = "bytes"
    try:
        span = byte_range(request.headers.get("range"), value.size)
    except Unsatisfiable as exc:
        headers["Content-Range"] = f"bytes */{exc.size}"
        return Response(status_code=416, headers=headers)
    start, stop = span or (0, value.size)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{value.size}"
    headers["Content-Length"] = str(stop - start)
    media_type = accept.OCTET_STREAM
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        value.chunks(start, stop), status_code=status, media_type=media_type, headers=headers
    )


def _multipart(request: Request, value: Value, headers: dict[str, str]) -> Response:
    boundary = multipart.new_boundary()
    media_type = multipart.content_type(boundary, accept.OCTET_STREAM)
    head = multipart.part_header(
        boundary, f"{accept.OCTET_STREAM}; transfer-syntax={syntaxes.DEFAULT_SYNTAX}"
    )
    tail = multipart.CRLF + multipart.closing(boundary)
    headers["Content-Length"] = str(len(head) + value.size + len(tail))
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media_type)

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for data in value.chunks(0, value.size):
            yield data
        yield tail

    return StreamingResponse(body(), media_type=media_type, headers=headers)


@router.api_route(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag_path}",
    methods=["GET", "HEAD"],
    summary="Retrieve bulk data",
)
async def retrieve_bulkdata(
    request: Request, archive: ArchiveDep, study: str, series: str, instance: str, tag_path: str
) -> Response:
    return await _respond(request, archive, Target(study, series, instance), tag_path)
