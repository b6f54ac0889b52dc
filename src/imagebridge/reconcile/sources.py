"""Import sources: from the settings file (``[import_sources.NAME]``) and from the index."""

from __future__ import annotations

from imagebridge.config import Settings
from imagebridge.errors import Conflict, InvalidInput, NotFound
from imagebridge.reconcile import coerce
from imagebridge.reconcile.records import Records, Source


class Sources:
    """Import sources from the settings file and from the index (``imagebridge source add``)."""

    def __init__(self, records: Records, settings: Settings) -> None:
        self.records = records
        self.settings = settings

    def all(self) -> list[Source]:
        configured = [
            Source(name, s.issuer, s.accession_prefix, configured=True)
            for name, s in sorted(self.settings.import_sources.items())
        ]
        names = {s.name for s in configured}
        return configured + [s for s in self.records.sources() if s.name not in names]

    def get(self, name: str) -> Source:
        for source in self.all():
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.all()) or "none yet; add one with 'imagebridge source add'"
        raise NotFound(f"no import source named '{name}' (known: {known})")

    def add(self, name: str, issuer: str, accession_prefix: str | None = None) -> Source:
        if not name or len(name) > 64 or not issuer.strip():
            raise InvalidInput("a source needs a name (1 to 64 characters) and an issuer")
        if name in self.settings.import_sources:
            raise Conflict(f"source '{name}' is configured in the settings file")
        if accession_prefix is not None:
            try:
                coerce.valid_prefix(accession_prefix)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc
        source = Source(name, issuer.strip(), accession_prefix)
        self.records.add_source(source)
        return source

    def remove(self, name: str) -> None:
        if name in self.settings.import_sources:
            raise Conflict(f"source '{name}' is configured in the settings file; remove it there")
        self.records.remove_source(name)
