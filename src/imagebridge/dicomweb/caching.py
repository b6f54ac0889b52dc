"""Validators for WADO-RS responses (RFC 9110 §8.8.3 ETag, §13.1.2 If-None-Match).

Stored instances never change under a blob key, so an ETag derived from the blob keys and
the representation asked for is a strong validator.
"""

from __future__ import annotations

import hashlib

from fastapi import Request, Response

CACHE_CONTROL = "private, max-age=0, must-revalidate"


def etag(*parts: object) -> str:
    return '"' + hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()[:32] + '"'


def not_modified(request: Request, tag: str) -> Response | None:
    """A 304 answer when the client already holds ``tag``; None otherwise."""
    held = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
    if tag in held or "*" in held:
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": CACHE_CONTROL})
    return None


def headers(tag: str) -> dict[str, str]:
    return {"ETag": tag, "Cache-Control": CACHE_CONTROL}
