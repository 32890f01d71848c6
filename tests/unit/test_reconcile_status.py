"""When status is rewritten and which transitions become Events (pure parts of reconcile/status.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from triton_operator.reconcile.status import stamp_metrics, transitions

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=10)


def test_refreshed_at_moves_only_when_the_figures_change() -> None:
    first: dict[str, Any] = {"metrics": {"total": {"inferenceRate": 2.0}}}
    stamp_metrics(first, {}, T0)
    assert first["metrics"]["refreshedAt"] == "2026-01-01T12:00:00Z"

    same: dict[str, Any] = {"metrics": {"total": {"inferenceRate": 2.0}}}
    stamp_metrics(same, first, T1)
    assert same == first  # nothing new to say: an identical status, so no write

    changed: dict[str, Any] = {"metrics": {"total": {"inferenceRate": 3.0}}}
    stamp_metrics(changed, first, T1)
    assert changed["metrics"]["refreshedAt"] == "2026-01-01T12:00:10Z"


def test_transitions_are_status_or_reason_changes_and_new_conditions() -> None:
    old = [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "All 2 ready."}]
    new = [
        {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "All 3 ready."},
        {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": ""},
    ]
    assert [c["type"] for c in transitions(old, new)] == ["Degraded"]  # a new message alone is no event
    flipped = [{"type": "Ready", "status": "False", "reason": "ReplicasNotReady", "message": "1 of 2"}]
    assert transitions(old, flipped) == flipped
