"""Audit records: one structured log line on ``imagebridge.audit``, and one durable row.

Each record is one JSON object: when, who (client, user, share, token patient), from where
(address, user agent, surface), what (``action``, resource type and interaction), which data
(patient, study, series, instance), and the outcome with its reason.

The durable copy goes to the :class:`~imagebridge.audit.store.AuditStore` of the current request
(see :mod:`imagebridge.audit.context`), to the one passed as ``store=``, or else to every store
attached for the process (the DICOM listener, CLI commands). Recording never blocks on the
database: the store queues the row and writes it in a batch.

Outcomes: ``allow`` / ``deny`` for access decisions; ``success`` / ``failure`` for operations.
Actions (``action=``): ``access`` (an access decision, the default), ``view``, ``search``,
``download``, ``share-create``, ``share-redeem``, ``share-redeem-failed``, ``share-revoke``,
``share-unlock``, ``import``, ``delete``, ``send``.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imagebridge.audit import context

if TYPE_CHECKING:
    from imagebridge.audit.store import AuditStore

log = logging.getLogger("imagebridge.audit")
_attached: weakref.WeakSet[AuditStore] = weakref.WeakSet()
_attached_lock = threading.Lock()


def record(outcome: str, reason: str, *, store: AuditStore | None = None, **fields: Any) -> dict[str, Any]:
    """Record one event; returns the entry as logged. ``None`` fields are left out."""
    entry: dict[str, Any] = {"at": datetime.now(UTC).isoformat(), "outcome": outcome, "reason": reason}
    here = context.current()
    if here is not None:
        entry.update(remote=here.remote, user_agent=here.user_agent, surface=here.surface)
    entry.update({k: v for k, v in fields.items() if v is not None})
    entry = {k: v for k, v in entry.items() if v is not None}
    log.info(json.dumps(entry, sort_keys=True, default=str))
    for sink in _sinks(store, here):
        sink.add(entry)
    return entry


CLI_CLIENT = "imagebridge-cli"
"""The client named in records of command-line operations (the operating-system user in ``os_user``)."""


def actor_fields(actor: str) -> dict[str, Any]:
    """Who did it, as record columns, from the ``kind:name`` strings services pass around:
    ``user:NAME`` (an account), ``client:ID`` (a system/ client), ``patient:ID`` (a patient's own
    token), ``cli:OSUSER`` (the command line); anything else is taken as a user name."""
    kind, _, name = actor.partition(":")
    if kind == "client":
        return {"client_id": name}
    if kind == "patient":
        return {"token_patient": name}
    if kind == "cli":
        return {"client_id": CLI_CLIENT, "os_user": name}
    return {"user": name if kind == "user" else actor}


def attach(store: AuditStore) -> None:
    """Make ``store`` receive records made outside any request (DIMSE handlers, CLI commands);
    held weakly, so a store nobody else uses any more stops receiving them."""
    with _attached_lock:
        _attached.add(store)


def detach(store: AuditStore) -> None:
    with _attached_lock:
        _attached.discard(store)


def _sinks(store: AuditStore | None, here: context.RequestContext | None) -> list[AuditStore]:
    if store is not None:
        return [store]
    if here is not None and here.store is not None:
        return [here.store]
    with _attached_lock:
        return list(_attached)
