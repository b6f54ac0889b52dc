"""The sharing world serves the audit tests too."""

from __future__ import annotations

from tests.sharing.conftest import served

__all__ = ["served"]
