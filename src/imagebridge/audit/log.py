"""Audit records as structured log lines on the ``imagebridge.audit`` logger.

Each record is one JSON object: when, who (client, user, token patient), what (resource type and
interaction), which data (patient, study, series, instance), and the outcome with its reason.
A durable AuditEvent store can subscribe to the same records later; the call sites stay the same.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("imagebridge.audit")


def record(outcome: str, reason: str, **fields: Any) -> dict[str, Any]:
    entry = {"at": datetime.now(UTC).isoformat(), "outcome": outcome, "reason": reason}
    entry.update({k: v for k, v in fields.items() if v is not None})
    log.info(json.dumps(entry, sort_keys=True))
    return entry
