"""A clock a test moves by hand, put in place of the operator's (status.now and time.monotonic).

The operator has no injectable clock yet: it calls `now()` from reconcile/status.py (a datetime, for
status timestamps and the rollout's step times) and `time.monotonic()` (windows, retry delays, the
drift period). `install` points every loaded `triton_operator` module's `now` and `time` at this clock,
except triton/ (the client's timeouts must measure real waiting). A module imported later, or one that
keeps its own alias, is not covered: the pass's tests would then see real time move (slowly).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import types
from typing import Any

import pytest
from triton_operator.reconcile import status

START = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, start: dt.datetime = START) -> None:
        self.wall = start
        self.mono = 10_000.0

    def now(self) -> dt.datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += dt.timedelta(seconds=seconds)
        self.mono += seconds


class _Time(types.ModuleType):
    """The `time` module with the fake clock's monotonic."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("time")
        self.monotonic = clock.monotonic

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def install(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the operator read `clock` (undone by monkeypatch at the test's end)."""
    shim, real_now = _Time(clock), status.now
    for name, module in list(sys.modules.items()):
        if not name.startswith("triton_operator.") or name.startswith("triton_operator.triton."):
            continue
        if getattr(module, "time", None) is time:
            monkeypatch.setattr(module, "time", shim)
        if getattr(module, "now", None) is real_now:
            monkeypatch.setattr(module, "now", clock.now)
