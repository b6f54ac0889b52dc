"""One module per DIMSE service; each handler is bound to a pynetdicom event (``evt.EVT_*``)."""

from __future__ import annotations

from pynetdicom.association import Association


def who(assoc: Association) -> str:
    """``CALLING@address:port`` of the association's peer, for log lines."""
    requestor = assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"
