"""The ``peers`` table: remote DICOM AEs added with ``imagebridge peer add``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from imagebridge.errors import Conflict, NotFound
from imagebridge.index.schema import peers


@dataclass(frozen=True)
class PeerRecord:
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False


class Peers:
    """Add, list and remove remote AEs; names are unique, AE titles need not be."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, peer: PeerRecord) -> None:
        row = {**peer.__dict__, "created_at": datetime.now(UTC)}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(peers).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"a peer named '{peer.name}' exists already; remove it first") from exc

    def remove(self, name: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(delete(peers).where(peers.c.name == name)).rowcount:
                raise NotFound(f"no peer named '{name}'")

    def all(self) -> list[PeerRecord]:
        columns = (peers.c.name, peers.c.ae_title, peers.c.host, peers.c.port, peers.c.tls)
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns).order_by(peers.c.name)).all()
        return [PeerRecord(r.name, r.ae_title, r.host, r.port, bool(r.tls)) for r in rows]
