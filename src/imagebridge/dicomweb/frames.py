"""WADO-RS frames (PS3.18 §10.4.1.1.3): ``.../instances/{i}/frames/{list}``.

Frames stored in the asked syntax are read by offset through the frame index, never by
reading the whole instance; decoding (to native little endian) runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from imagebridge.dicomweb import accept, caching, multipart
from imagebridge.dicomweb.deps import ArchiveDep
from imagebridge.index.lookup import Target
from imagebridge.services import frames
from imagebridge.services.archive import Archive

router = APIRouter(tags=["WADO-RS"])


async def respond_frames(
    request: Request, archive: Archive, target: Target, numbers: list[int] | None
) -> Response:
    """Frames ``numbers`` (all when None) of the instance ``target``, negotiated by Accept."""
    ranges = accept.parse(request.headers.get("accept"))
    (instance,) = await anyio.to_thread.run_sync(archive.lookup.instances, target)
    wanted = numbers or list(range(1, frames.frame_count(instance) + 1))
    frames.check_frames(instance, wanted)
    choice = accept.choose_pixels(ranges, instance.transfer_syntax, single_ok=len(wanted) == 1)
    source = await anyio.to_thread.run_sync(
        lambda: frames.source(archive.blobs, instance, decode=choice.decode)
    )
    tag = caching.etag(instance.blob_key, wanted, choice)
    if (cached := caching.not_modified(request, tag)) is not None:
        return cached
    headers = caching.headers(tag)
    if not choice.multipart:
        return await _single(request, source, wanted[0], choice, headers)
    boundary = multipart.new_boundary()
    media_type = multipart.content_type(boundary, choice.media_type)
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media_type)
    first = await anyio.to_thread.run_sync(source.frame, wanted[0])
    body = _stream(
        source.frames(wanted[1:]), first, multipart.part_header(boundary, choice.part_type), boundary
    )
    return StreamingResponse(body, media_type=media_type, headers=headers)


async def _single(
    request: Request,
    source: frames.FrameSource,
    number: int,
    choice: accept.PixelChoice,
    headers: dict[str, str],
) -> Response:
    media_type = choice.part_type
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media_type)
    data = await anyio.to_thread.run_sync(source.frame, number)
    return Response(data, media_type=media_type, headers=headers)


async def _stream(rest: Iterator[bytes], first: bytes, head: bytes, boundary: str) -> AsyncIterator[bytes]:
    """The first frame was produced before the response started, so that a frame which cannot be
    decoded is a 406 rather than a broken body; the rest are produced one at a time."""
    yield head + first + multipart.CRLF
    while (data := await anyio.to_thread.run_sync(next, rest, None)) is not None:
        yield head + data + multipart.CRLF
    yield multipart.closing(boundary)


@router.api_route(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}",
    methods=["GET", "HEAD"],
    summary="Retrieve frames of an instance",
)
async def retrieve_frames(
    request: Request, archive: ArchiveDep, study: str, series: str, instance: str, frame_list: str
) -> Response:
    numbers = frames.parse_frame_list(frame_list)
    return await respond_frames(request, archive, Target(study, series, instance), numbers)
