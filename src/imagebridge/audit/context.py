"""Where the current request came from, for the audit records made while it is served.

A small ASGI middleware (:class:`AuditContextMiddleware`) sets a context variable per HTTP
request: the client's address, its User-Agent, the surface (``dicomweb``, ``fhir``, ``portal``,
``api`` ...) and the store its records go to. Records made outside a request (the DICOM listener,
a CLI command) carry no address unless the caller passes one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagebridge.audit.store import AuditStore

_SURFACES = ("dicomweb", "fhir", "oauth", "portal", "viewer", "api", "s")


@dataclass(frozen=True)
class RequestContext:
    remote: str | None = None
    user_agent: str | None = None
    surface: str | None = None
    store: AuditStore | None = None


_current: ContextVar[RequestContext | None] = ContextVar("imagebridge_audit_context", default=None)


def current() -> RequestContext | None:
    return _current.get()


@contextmanager
def bound(context: RequestContext) -> Iterator[RequestContext]:
    """Make ``context`` the current one for the code inside the ``with`` (and the threads it copies to)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def surface_of(path: str) -> str | None:
    first = path.lstrip("/").split("/", 1)[0]
    return ("share" if first == "s" else first) if first in _SURFACES else None


class AuditContextMiddleware:
    """Pure ASGI middleware: binds a :class:`RequestContext` for each HTTP request (no body buffering)."""

    def __init__(self, app: Any, store: AuditStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        agent = next((v for k, v in scope.get("headers", ()) if k == b"user-agent"), None)
        context = RequestContext(
            remote=client[0] if client else None,
            user_agent=agent.decode("latin-1")[:512] if agent else None,
            surface=surface_of(scope.get("path", "")),
            store=self.store,
        )
        token = _current.set(context)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
