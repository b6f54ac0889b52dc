"""TCP options for every DICOM connection this process opens or accepts.

DIMSE writes a message as several small sends (PDV headers, command, data set fragments);
with Nagle's algorithm on, each C-STORE then waits for the peer's delayed ACK (~40 ms on
Linux loopback), capping a transfer at a few dozen instances per second. pynetdicom leaves
the option alone, so it is set here, on accepted sockets and, through ``EVT_CONN_OPEN``,
on the ones pynetdicom connects.
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom import events, evt


def no_delay(sock: socket.socket | None) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def on_open(event: events.Event) -> None:
    transport = getattr(event.assoc.dul, "socket", None)
    no_delay(getattr(transport, "socket", None))


def with_no_delay(handlers: list[Any] | None) -> list[Any]:
    """``evt_handlers`` for ``AE.associate`` with :func:`on_open` added."""
    return [*(handlers or []), (evt.EVT_CONN_OPEN, on_open)]
