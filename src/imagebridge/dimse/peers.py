"""Remote AEs by name, from the settings file and from the index (``imagebridge peer add``)."""

from __future__ import annotations

from dataclasses import dataclass

from imagebridge.config import Settings
from imagebridge.errors import InvalidInput, NotFound
from imagebridge.index.peers import PeerRecord, Peers


@dataclass(frozen=True)
class Peer:
    """A remote application entity (PS3.8 §7.1): who it is and where it listens."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    source: str = "index"

    def describe(self) -> str:
        scheme = "dicom-tls" if self.tls else "dicom"
        return f"{self.name} ({self.ae_title} at {scheme}://{self.host}:{self.port})"


def check_ae_title(value: str) -> str:
    """An AE title is 1-16 characters of the default repertoire, no backslash (PS3.5 §6.2, AE)."""
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value or not value.isascii() or not value.isprintable():
        raise InvalidInput(f"'{value}' is not an AE title: 1 to 16 printable ASCII characters, no backslash")
    return value


class PeerDirectory:
    """The union of configured peers; the settings file wins over the index for a shared name."""

    def __init__(self, settings: Settings, repository: Peers | None) -> None:
        self.settings = settings
        self.repository = repository

    def all(self) -> list[Peer]:
        found: dict[str, Peer] = {}
        if self.repository is not None:
            for record in self.repository.all():
                found[record.name] = Peer(record.name, record.ae_title, record.host, record.port, record.tls)
        for name, conf in self.settings.dicom_peers.items():
            found[name] = Peer(name, conf.aet, conf.host, conf.port, conf.tls, source="settings")
        return sorted(found.values(), key=lambda p: p.name)

    def named(self, name: str) -> Peer:
        for peer in self.all():
            if peer.name == name:
                return peer
        known = ", ".join(p.name for p in self.all()) or "none yet"
        raise NotFound(f"no peer named '{name}' (known: {known}); add one with `imagebridge peer add`")

    def with_ae_title(self, ae_title: str) -> Peer | None:
        return next((p for p in self.all() if p.ae_title == ae_title.strip()), None)

    def resolve(self, text: str) -> Peer:
        """A peer by name, by AE title, or written out as ``AET@HOST:PORT``."""
        if "@" in text and ":" in text:
            aet, _, address = text.partition("@")
            host, _, port = address.rpartition(":")
            if not port.isdigit():
                raise InvalidInput(f"'{text}': the port after ':' must be a number")
            return Peer(text, check_ae_title(aet), host, int(port), source="command line")
        try:
            return self.named(text)
        except NotFound:
            by_aet = self.with_ae_title(text)
            if by_aet is not None:
                return by_aet
            raise

    def add(self, record: PeerRecord) -> None:
        if self.repository is None:
            raise InvalidInput("peers can only be added when the index is open")
        check_ae_title(record.ae_title)
        self.repository.add(record)
