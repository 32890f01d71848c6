"""Observed shares: nv_inference_count deltas per version, counter resets, pods that come and go."""

from __future__ import annotations

import pytest
from triton_operator.rollout.shares import (
    SampleKey,
    TrafficShares,
    accumulate,
    counter_delta,
    observed_shares,
)

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


@pytest.mark.parametrize(
    ("before", "after", "counts"),
    [
        pytest.param(
            {("p1", "m", "1"): 1_000.0, ("p1", "m", "2"): 100.0},
            {("p1", "m", "1"): 1_900.0, ("p1", "m", "2"): 200.0},
            {"1": 900, "2": 100},
            id="one-pod",
        ),
        pytest.param(
            {("p1", "m", "1"): 1_000.0, ("p2", "m", "1"): 500.0, ("p2", "m", "2"): 50.0},
            {("p1", "m", "1"): 1_450.0, ("p2", "m", "1"): 950.0, ("p2", "m", "2"): 350.0},
            {"1": 900, "2": 300},
            id="summed-over-pods",
        ),
        pytest.param(
            {("p1", "m", "1"): 1_000.0, ("p1", "m", "2"): 300.0},
            {("p1", "m", "1"): 90.0, ("p1", "m", "2"): 10.0},
            {"1": 90, "2": 10},
            id="pod-restarted",
        ),
        pytest.param(
            {("old", "m", "1"): 5_000.0},
            {("new", "m", "1"): 80.0, ("new", "m", "2"): 20.0},
            {"1": 80, "2": 20},
            id="pod-replaced-gone-adds-nothing",
        ),
        pytest.param(
            {("p1", "m", "1"): 10.0, ("p1", "m", "2"): 10.0, ("p1", "other", "2"): 0.0},
            {("p1", "m", "1"): 110.0, ("p1", "m", "2"): 10.0, ("p1", "other", "2"): 9_999.0},
            {"1": 100, "2": 0},
            id="other-models-ignored-idle-version-shown",
        ),
        pytest.param({}, {}, {}, id="nothing"),
    ],
)
def test_observed_shares(
    before: dict[SampleKey, float], after: dict[SampleKey, float], counts: dict[str, int]
) -> None:
    assert observed_shares(before, after, "m").counts == counts


def test_percent_and_description() -> None:
    shares = TrafficShares({"10": 98, "2": 9_902})
    assert shares.total == 10_000
    assert shares.percent == {"10": pytest.approx(0.98), "2": pytest.approx(99.02)}
    assert shares.describe() == "version 2 99.0%, version 10 1.0% of 10,000 inferences"


def test_no_traffic_has_no_shares() -> None:
    shares = TrafficShares({"1": 0, "2": 0})
    assert (shares.total, shares.percent, shares.describe()) == (0, {}, "no inferences in the window")


def test_accumulate_adds_windows() -> None:
    total = accumulate([TrafficShares({"1": 90, "2": 10}), TrafficShares({"2": 30, "3": 5}), TrafficShares()])
    assert total == TrafficShares({"1": 90, "2": 40, "3": 5})
    assert accumulate([]) == TrafficShares()


def test_shares_keep_their_own_counts() -> None:
    counts = {"1": 5}
    shares = TrafficShares(counts)
    counts["1"] = 6
    assert shares.counts == {"1": 5}
