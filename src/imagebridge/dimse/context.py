"""What every DIMSE handler is given: the archive, the peer directory, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from imagebridge.config import Settings
from imagebridge.dimse.peers import PeerDirectory
from imagebridge.services.archive import Archive


@dataclass(frozen=True)
class DimseContext:
    archive: Archive
    peers: PeerDirectory
    ae_title: str

    @property
    def settings(self) -> Settings:
        return self.archive.settings
