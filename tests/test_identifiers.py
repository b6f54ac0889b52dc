"""Identifiers people pass on the command line never start with '-' (they would read as options)."""

from __future__ import annotations

import pytest

from imagebridge import identifiers


def test_a_leading_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-starts-with-dash", "_fine-after"])
    monkeypatch.setattr(identifiers.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert identifiers.public_id(18) == "_fine-after"


def test_many_ids_none_with_a_leading_dash() -> None:
    ids = [identifiers.public_id(18) for _ in range(2000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids) and all(len(i) == 24 for i in ids)
