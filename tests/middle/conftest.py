"""Fixtures of the middle tier: a `World` per test (fake Kubernetes, fake Tritons, a hand-moved clock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.scenario import World


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(monkeypatch)
    try:
        yield w
    finally:
        w.close()
