"""Random identifiers that people type: share ids, client ids, upload ids.

``secrets.token_urlsafe`` may begin with ``-``; on a command line (``imagebridge share revoke
-Xy…``) such an id reads as an option and the command fails. One id in 64 would, so every
identifier a person may pass to the CLI comes from here and never starts with ``-``.
"""

from __future__ import annotations

import secrets


def public_id(nbytes: int) -> str:
    """A URL-safe random identifier of ``nbytes`` random bytes that does not start with ``-``."""
    while True:
        candidate = secrets.token_urlsafe(nbytes)
        if not candidate.startswith("-"):
            return candidate
