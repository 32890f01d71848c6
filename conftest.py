"""Markers follow the folder: tests/unit and sandbox/tests/unit -> unit, .../integration -> integration, tests/e2e -> e2e.
`pytest -m unit` runs the fast tests alone."""

from __future__ import annotations

from pathlib import Path

import pytest

_KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in _KINDS:
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))
