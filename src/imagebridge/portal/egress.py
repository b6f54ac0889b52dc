"""Where "send to my system" may connect: public addresses, and the networks the administrator allows.

Anyone who may send (a clinician, or a share recipient without an account) types the destination,
and the server connects from where it runs. Left open, that reaches the server's own network:
loopback, private ranges, link-local (cloud metadata at 169.254.169.254), unique-local IPv6. So:

* the host name is resolved **once** (:func:`check`) and **every** address it resolves to must be
  public, or inside ``Settings.send_allowed_networks`` (CIDRs; empty by default);
* the connection goes to one of those checked addresses and nowhere else: DICOM gets the address
  itself, and HTTP goes through :class:`PinnedTransport`, whose network layer connects only to
  the checked addresses of the checked host and port (the URL, the ``Host`` header and TLS server
  name stay the typed host, so certificates are verified against it). A second DNS answer between
  the check and the connection (DNS rebinding) is never asked for;
* redirects are not followed, and any other host the HTTP client would reach is refused;
* proxies from the environment are not used (the check is about the destination itself).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE = "This server is not allowed to send to private addresses; ask your administrator."


class DestinationRefused(Exception):
    """The destination may not (or cannot) be reached; the message is for the person's form."""


class PrivateDestination(DestinationRefused):
    """The destination resolves to an address that is neither public nor allowed."""


@dataclass(frozen=True)
class Destination:
    """A host name as typed, the port, and the addresses it resolved to, all of them checked."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def networks(values: Iterable[str]) -> list[IPNetwork]:
    """CIDRs (``10.20.0.0/16``, ``fd00::/8``, a single address) as networks; ValueError names a bad one."""
    found: list[IPNetwork] = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"'{value}' is not a network like 10.20.0.0/16 or fd00::/8") from exc
    return found


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address; IPv4 carried inside IPv6 is judged as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and not is_public(embedded):
            return False
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
        and not address.is_loopback
        and not address.is_link_local
    )


def allowed(address: IPAddress, allowed_networks: Sequence[IPNetwork]) -> bool:
    if is_public(address):
        return True
    plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(
        a in n for n in allowed_networks for a in (address, plain) if a is not None and a.version == n.version
    )


def _lookup(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the one DNS question of a send)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check(host: str, port: int, allowed_networks: Sequence[IPNetwork]) -> Destination:
    """Resolve ``host`` once and check every address; DestinationRefused says why not."""
    name = host.strip().strip("[]")
    if not name:
        raise DestinationRefused("Give the host name or address of your system.")
    try:
        found = _lookup(name, port)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise DestinationRefused(f"The name {name} could not be found. Check the address.") from exc
    addresses: list[IPAddress] = []
    for text in found:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError as exc:
            raise DestinationRefused(f"{name} resolved to something that is not an address.") from exc
        if not allowed(address, allowed_networks):
            raise PrivateDestination(f"{PRIVATE} ({name} is not a public address.)")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationRefused(f"The name {name} could not be found. Check the address.")
    addresses.sort(key=lambda a: a.version)  # IPv4 first: the common case for DICOM systems
    return Destination(name, port, tuple(addresses))


def check_url(url: httpx.URL, allowed_networks: Sequence[IPNetwork]) -> Destination:
    """:func:`check` for the host and port of an http(s) URL (as httpx will connect to them)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return check(url.raw_host.decode("ascii"), port, allowed_networks)


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to the checked addresses of one checked host and port."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self.destination.host.lower() or port != self.destination.port:
            raise httpcore.ConnectError(f"{host}:{port} is not the checked destination; not connecting")
        last: Exception | None = None
        for address in self.destination.addresses:
            try:
                return self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError("no address to connect to")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("Unix sockets are never a send destination")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """An httpx transport that reaches only ``destination`` (see the module docstring)."""

    def __init__(self, destination: Destination, *, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=1,
            network_backend=_PinnedBackend(destination),
        )


def client(destination: Destination, timeout: float) -> httpx.Client:
    """An httpx client bound to ``destination``: no redirects, no proxies, no other host."""
    return httpx.Client(
        transport=PinnedTransport(destination), trust_env=False, follow_redirects=False, timeout=timeout
    )
