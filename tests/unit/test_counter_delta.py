"""Counter deltas between two scrapes: growth, counter resets, new series."""

from __future__ import annotations

import pytest
from triton_operator.observe.rollout import counter_delta

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("before", "after", "delta"),
    [
        (100.0, 160.0, 60.0),
        (100.0, 100.0, 0.0),
        (100.0, 7.0, 7.0),  # the pod restarted: its counter began again at 0
        (None, 42.0, 42.0),  # a new pod (or a version loaded since)
        (0.0, 0.0, 0.0),
    ],
)
def test_counter_delta(before: float | None, after: float, delta: float) -> None:
    assert counter_delta(before, after) == delta
