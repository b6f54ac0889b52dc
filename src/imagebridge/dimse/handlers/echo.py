"""Verification SOP Class (PS3.4 Annex A): C-ECHO always succeeds once associated."""

from __future__ import annotations

import logging

from pynetdicom import events

from imagebridge.dimse.handlers import who
from imagebridge.dimse.status import SUCCESS

log = logging.getLogger("imagebridge.dimse")


def handle_echo(event: events.Event) -> int:
    log.info("C-ECHO from %s", who(event.assoc))
    return SUCCESS
