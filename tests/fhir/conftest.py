"""The §4 world of tests/auth, shared with the FHIR tests."""

from __future__ import annotations

from tests.auth.conftest import world, world_archive

__all__ = ["world", "world_archive"]
