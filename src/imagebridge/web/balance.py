"""New connections go to the worker process with the fewest open ones (``serve --workers N``).

Forked workers used to share the listening socket through uvicorn, which accepts every pending
connection as soon as its event loop sees one: four clients connecting together often all landed
in one worker (measured: STOW-RS with 4 clients, 289 instances/s with all four in one process,
about 420 with two in each). A process runs Python on one core at a time, so a worker holding
most of the connections is the bottleneck while another core idles.

Here each worker accepts for itself. The supervisor shares a small array of open-connection
counts with its workers; a worker woken by a new connection publishes its own count and lets a
worker with fewer connections take it, waiting ``DEFER_S`` before it takes the connection itself
(so a busy or stuck peer never leaves a client waiting longer than that). Accepting one
connection per wake-up keeps the counts current between two accepts. The accepted socket is then
served by uvicorn's own protocol, exactly as if uvicorn had accepted it. Plain HTTP only, as
``web/server.py`` configures uvicorn (TLS, where wanted, ends at a proxy in front).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing.sharedctypes
import socket
from collections.abc import Sequence
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

DEFER_S = 0.05
"""How long a worker leaves a new connection to a less busy one before taking it itself. Only a
stalled peer makes a client wait this long; 5 ms was too short for a peer that was merely waiting
for a core on a loaded 2-core machine (a 5:3 split in CI)."""


class Loads:
    """Open-connection counts, one slot per worker, in memory shared across ``fork``."""

    def __init__(self, workers: int) -> None:
        self._counts: Any = multiprocessing.sharedctypes.RawArray(ctypes.c_int, workers)

    def set(self, slot: int, count: int) -> None:
        self._counts[slot] = count

    def others(self, slot: int) -> list[int]:
        return [count for i, count in enumerate(self._counts) if i != slot]


def should_accept(mine: int, others: Sequence[int], waited: bool) -> bool:
    """Whether a worker with ``mine`` connections takes a new one now: when no other worker has
    fewer, or when it has already waited ``DEFER_S`` for one of them to take it."""
    return waited or not others or mine <= min(others)


class BalancedServer(uvicorn.Server):
    """uvicorn serving the connections this worker accepts from a shared listening socket."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, loads: Loads, slot: int) -> None:
        super().__init__(config)
        self.listening, self.loads, self.slot = sock, loads, slot
        self._waiting: asyncio.TimerHandle | None = None
        self._watching = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # everything but listening: that is done here
        self.listening.setblocking(False)
        self._publish()
        self._watch()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._unwatch()
        if self._waiting is not None:
            self._waiting.cancel()
        await super().shutdown(sockets)

    async def on_tick(self, counter: int) -> bool:
        self._publish()  # connections closed since the last accept
        return await super().on_tick(counter)

    def _publish(self) -> None:
        self.loads.set(self.slot, len(self.server_state.connections))

    def _watch(self) -> None:
        if not self._watching:
            asyncio.get_running_loop().add_reader(self.listening.fileno(), self._ready, False)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            asyncio.get_running_loop().remove_reader(self.listening.fileno())
            self._watching = False

    def _ready(self, waited: bool) -> None:
        """A connection is waiting (or was, when another worker took it first)."""
        self._waiting = None
        if self.should_exit:
            return
        mine = len(self.server_state.connections)
        self.loads.set(self.slot, mine)
        if not should_accept(mine, self.loads.others(self.slot), waited):
            self._unwatch()
            loop = asyncio.get_running_loop()
            self._waiting = loop.call_later(DEFER_S, self._ready, True)
            return
        try:
            conn, _ = self.listening.accept()
        except (BlockingIOError, InterruptedError):
            self._watch()  # another worker took it
            return
        except OSError as exc:  # out of descriptors, say: try again a little later
            log.warning("could not accept a connection: %s", exc)
            self._unwatch()
            self._waiting = asyncio.get_running_loop().call_later(DEFER_S * 2, self._ready, True)
            return
        self._watch()
        self.loads.set(self.slot, mine + 1)
        asyncio.get_running_loop().create_task(self._serve_accepted(conn))

    async def _serve_accepted(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.connect_accepted_socket(self._protocol, conn)
        except OSError as exc:
            log.warning("could not serve an accepted connection: %s", exc)
            conn.close()

    def _protocol(self) -> asyncio.Protocol:
        """What uvicorn's own listener makes for each connection."""
        config = self.config
        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            _loop=asyncio.get_running_loop(),
        )
        return protocol
