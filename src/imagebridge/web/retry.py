"""Every 503 tells the client when to come back (RFC 9110 §15.6.4, §10.2.3 ``Retry-After``).

SMART Imaging Access lets an imaging server answer 503 with ``Retry-After`` and asks apps to
retry the identical request; in integrated mode an unreachable EHR is such a 503. Responses that
already carry the header keep theirs.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RetryAfter:
    def __init__(self, app: ASGIApp, seconds: int) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = MutableHeaders(scope=message)
                if "retry-after" not in headers:
                    headers["Retry-After"] = str(self.seconds)
            await send(message)

        await self.app(scope, receive, sending)
