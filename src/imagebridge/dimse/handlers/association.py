"""Association policy and logging: who may call, and a log line for every association's fate.

The calling AE title must be a configured peer unless ``allow_any_caller`` is set;
the called AE title must be ours (PS3.8 §9.3.4, A-ASSOCIATE-RJ reasons 3 and 7).
Peers are re-read as each connection opens, so ``imagebridge peer add`` takes effect
without a restart.
"""

from __future__ import annotations

import logging

from pynetdicom import events

from imagebridge.dimse.context import DimseContext
from imagebridge.dimse.handlers import who

log = logging.getLogger("imagebridge.dimse")

NOBODY = "NO-PEER-KNOWN"
"""The caller list when no peer is configured: a title no real peer uses, so everyone is refused."""


def on_connection(event: events.Event, context: DimseContext) -> None:
    assoc = event.assoc
    if context.settings.allow_any_caller:
        assoc.ae.require_calling_aet = []
    else:
        titles = sorted({p.ae_title for p in context.peers.all()})
        assoc.ae.require_calling_aet = titles or [NOBODY]
    log.info("connection from %s:%s", *_address(event))


def _address(event: events.Event) -> tuple[str, int]:
    return getattr(event, "address", ("?", 0))


def on_established(event: events.Event) -> None:
    assoc = event.assoc
    log.info(
        "association %s accepted: %s -> %s, %d presentation contexts",
        assoc.name,
        who(assoc),
        assoc.acceptor.ae_title,
        len(assoc.accepted_contexts),
    )


def on_rejected(event: events.Event) -> None:
    assoc = event.assoc
    rq = assoc.requestor
    if rq.ae_title not in assoc.ae.require_calling_aet and assoc.ae.require_calling_aet:
        reason = f"calling AE title '{rq.ae_title}' is not a configured peer"
    elif rq.primitive is not None and rq.primitive.called_ae_title != assoc.acceptor.ae_title:
        reason = f"called AE title '{rq.primitive.called_ae_title}' is not ours"
    else:
        reason = "too many associations"
    log.warning("association from %s:%s refused: %s", rq.address, rq.port, reason)


def on_aborted(event: events.Event) -> None:
    log.warning("association %s from %s aborted", event.assoc.name, who(event.assoc))


def on_released(event: events.Event) -> None:
    log.info("association %s from %s released", event.assoc.name, who(event.assoc))


_DROPPED = {
    "Evt17": "the connection was closed, or a PDU was not completed in time",
    "Evt19": "a PDU of unknown type or that could not be decoded was received",
}


def on_transition(event: events.Event) -> None:
    """A log line for a connection dropped by the upper layer state machine (PS3.8 §9.2);
    once: in Sta13 the rest of the peer's bytes are read and ignored until it closes."""
    why = _DROPPED.get(event.fsm_event)
    if why is not None and event.current_state != "Sta13" and not event.assoc.is_released:
        rq = event.assoc.requestor
        log.warning("connection from %s:%s dropped (%s): %s", rq.address, rq.port, event.current_state, why)


def on_closed(event: events.Event) -> None:
    assoc = event.assoc
    if assoc.is_released or assoc.is_rejected or assoc.is_established:
        return
    log.warning(
        "connection from %s:%s closed without an association: no valid A-ASSOCIATE-RQ "
        "within %g s (malformed PDU, wrong protocol or silent peer)",
        *_address(event),
        assoc.ae.acse_timeout or 0,
    )
