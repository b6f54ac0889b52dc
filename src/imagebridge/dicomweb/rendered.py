"""WADO-RS rendered resources and thumbnails (PS3.18 §10.4.1.1.4-5, query parameters §8.3.5.1).

``/rendered`` and ``/thumbnail`` at study, series, instance and frame level. A study or series
is shown by a representative instance; an instance by its first frame. The lookup, the checks and
the decoding and encoding run in one worker thread call per request.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response

from imagebridge.dicom import render
from imagebridge.dicomweb import accept, caching, multipart
from imagebridge.dicomweb.deps import ArchiveDep
from imagebridge.errors import InvalidQuery
from imagebridge.index.lookup import Target
from imagebridge.services import frames
from imagebridge.services import render as rendering
from imagebridge.services.archive import Archive

router = APIRouter(tags=["WADO-RS rendered"])

THUMBNAIL_VIEWPORT = (128, 128)
MAX_VIEWPORT = 8192


def parse_window(text: str | None) -> render.Window | None:
    """``window=center,width,function`` (PS3.18 §8.3.5.1.3); function defaults to linear."""
    if text is None:
        return None
    items = [i.strip() for i in text.split(",")]
    try:
        if len(items) not in (2, 3):
            raise ValueError
        center, width = float(items[0]), float(items[1])
    except ValueError:
        raise InvalidQuery(f"window={text!r} is malformed: give center,width[,function]") from None
    function = items[2].lower() if len(items) == 3 else "linear"
    if function not in render.FUNCTIONS:
        raise InvalidQuery(f"window function {items[2]!r} is not one of {', '.join(render.FUNCTIONS)}")
    if width <= 0 or (function == "linear" and width < 1):
        raise InvalidQuery(f"window width {items[1]} is too small (PS3.3 §C.11.2.1.2)")
    return render.Window(center, width, function)


def parse_viewport(text: str | None) -> tuple[int, int] | None:
    """``viewport=vw,vh``: the largest size of the image, which keeps its aspect ratio."""
    if text is None:
        return None
    items = [i.strip() for i in text.split(",")]
    if len(items) != 2 or not all(i.isdecimal() and 0 < int(i) <= MAX_VIEWPORT for i in items):
        raise InvalidQuery(
            f"viewport={text!r} is malformed: give vw,vh, two integers from 1 to {MAX_VIEWPORT}"
        )
    return int(items[0]), int(items[1])


def parse_quality(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.strip().isdecimal() or not 1 <= int(text) <= 100:
        raise InvalidQuery(f"quality={text!r} is malformed: give an integer from 1 to 100")
    return int(text)


def _options(request: Request, *, thumbnail: bool) -> render.RenderOptions:
    query = request.query_params
    choice = accept.choose(
        accept.parse(request.headers.get("accept")), render.MEDIA_TYPES, single_ok=render.MEDIA_TYPES
    )
    viewport = parse_viewport(query.get("viewport"))
    return render.RenderOptions(
        media_type=choice.media_type,
        window=parse_window(query.get("window")),
        viewport=viewport or (THUMBNAIL_VIEWPORT if thumbnail else None),
        quality=parse_quality(query.get("quality"), 75 if thumbnail else 90),
    )


async def _respond(
    request: Request, archive: Archive, target: Target, numbers: list[int] | None, *, thumbnail: bool
) -> Response:
    options = _options(request, thumbnail=thumbnail)
    return await anyio.to_thread.run_sync(_answer, request, archive, target, numbers or [1], options)


def _answer(
    request: Request, archive: Archive, target: Target, wanted: list[int], options: render.RenderOptions
) -> Response:
    """Look up, check, and render in one worker thread (one hop per request, not one per step)."""
    instances = archive.lookup.instances(target)
    instance = instances[0] if target.sop_uid else rendering.representative(instances, target)
    for number in wanted:
        rendering.check_renderable(instance, number)
    tag = caching.etag(instance.blob_key, wanted, options)
    if (cached := caching.not_modified(request, tag)) is not None:
        return cached
    headers = caching.headers(tag)
    boundary = multipart.new_boundary() if len(wanted) > 1 else None
    media_type = (
        options.media_type if boundary is None else multipart.content_type(boundary, options.media_type)
    )
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media_type)
    images = [rendering.rendered(archive.blobs, instance, number, options) for number in wanted]
    if boundary is None:
        body = images[0]
    else:
        head = multipart.part_header(boundary, options.media_type)
        body = b"".join(head + image + multipart.CRLF for image in images) + multipart.closing(boundary)
    return Response(body, media_type=media_type, headers=headers)


_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


def _routes(kind: str, thumbnail: bool) -> None:
    label = "Thumbnail" if thumbnail else "Rendered"

    @router.api_route(f"/studies/{{study}}/{kind}", methods=["GET", "HEAD"], summary=f"{label} study")
    async def study_level(request: Request, archive: ArchiveDep, study: str) -> Response:
        return await _respond(request, archive, Target(study), None, thumbnail=thumbnail)

    @router.api_route(
        f"/studies/{{study}}/series/{{series}}/{kind}", methods=["GET", "HEAD"], summary=f"{label} series"
    )
    async def series_level(request: Request, archive: ArchiveDep, study: str, series: str) -> Response:
        return await _respond(request, archive, Target(study, series), None, thumbnail=thumbnail)

    @router.api_route(f"{_INSTANCE}/{kind}", methods=["GET", "HEAD"], summary=f"{label} instance")
    async def instance_level(
        request: Request, archive: ArchiveDep, study: str, series: str, instance: str
    ) -> Response:
        return await _respond(request, archive, Target(study, series, instance), None, thumbnail=thumbnail)

    @router.api_route(
        f"{_INSTANCE}/frames/{{frame_list}}/{kind}", methods=["GET", "HEAD"], summary=f"{label} frames"
    )
    async def frame_level(
        request: Request, archive: ArchiveDep, study: str, series: str, instance: str, frame_list: str
    ) -> Response:
        numbers = frames.parse_frame_list(frame_list)
        return await _respond(request, archive, Target(study, series, instance), numbers, thumbnail=thumbnail)


_routes("rendered", thumbnail=False)
_routes("thumbnail", thumbnail=True)
