"""Canary analysis: each check alone, the worst verdict wins, messages carry the measured numbers."""

from __future__ import annotations

import pytest
from triton_operator.rollout.analysis import (
    AnalysisLimits,
    VariantWindow,
    Verdict,
    assess,
    is_worse,
    validate_limits,
    worst,
)

pytestmark = pytest.mark.unit

OK, HOLD, FAIL = Verdict.SUCCESSFUL, Verdict.INCONCLUSIVE, Verdict.FAILED
LIMITS = AnalysisLimits(min_requests=200, max_failure_ratio=0.01, max_latency_ratio=2.0, max_queue_ratio=3.0)
FAILURES_ONLY = AnalysisLimits(min_requests=200, max_failure_ratio=0.01)
STABLE = VariantWindow(requests=1_000, failures=0, p99_ms=2.4, queue_ms=2.0)


def window(
    requests: int, failures: int = 0, p99: float | None = 2.5, queue: float | None = 2.0
) -> VariantWindow:
    return VariantWindow(requests, failures, p99, queue)


@pytest.mark.parametrize(
    ("stable", "canary", "limits", "verdict", "message"),
    [
        pytest.param(
            STABLE,
            window(1_234, 2),
            LIMITS,
            OK,
            "1,234 canary and 1,000 stable requests (200 required); failure ratio 0.002 <= 0.010 "
            "(2 of 1,234 requests); p99 2.5 ms is 1.04x stable's 2.4 ms <= 2.0x; "
            "queue 2.0 ms is 1.0x stable's 2.0 ms <= 3.0x",
            id="all-pass",
        ),
        pytest.param(
            STABLE,
            window(200, 40),
            FAILURES_ONLY,
            FAIL,
            "failure ratio 0.200 > 0.010 (40 of 200 requests)",
            id="failure-ratio-over",
        ),
        pytest.param(STABLE, window(200, 2), FAILURES_ONLY, OK, None, id="failure-ratio-at-the-limit-passes"),
        pytest.param(
            STABLE,
            window(200, 3),
            FAILURES_ONLY,
            FAIL,
            "failure ratio 0.015 > 0.010 (3 of 200 requests)",
            id="failure-ratio-just-over",
        ),
        pytest.param(
            STABLE,
            window(10_000, 6),
            AnalysisLimits(200, 0.0005),
            FAIL,
            "failure ratio 0.0006 > 0.0005 (6 of 10,000 requests)",
            id="small-limit-keeps-its-digits",
        ),
        pytest.param(
            STABLE,
            window(37),
            LIMITS,
            HOLD,
            "inconclusive: 37 of 200 requests on canary",
            id="too-few-on-canary",
        ),
        pytest.param(
            window(150),
            window(1_234),
            LIMITS,
            HOLD,
            "inconclusive: 150 of 200 requests on stable",
            id="too-few-on-stable",
        ),
        pytest.param(
            window(150),
            window(0),
            LIMITS,
            HOLD,
            "inconclusive: 0 of 200 requests on canary, 150 of 200 requests on stable",
            id="too-few-on-both-one-message",
        ),
        pytest.param(
            STABLE,
            window(10, 3),
            LIMITS,
            FAIL,
            "failure ratio 0.300 > 0.010 (3 of 10 requests): failing early, 3 failures are already "
            "over 0.010 of the 200 requests required",
            id="fails-early-before-min-requests",
        ),
        pytest.param(
            STABLE,
            window(10, 2),
            LIMITS,
            HOLD,
            "inconclusive: 10 of 200 requests on canary",
            id="as-many-failures-as-allowed-still-waits",
        ),
        pytest.param(
            STABLE,
            window(5, 1),
            AnalysisLimits(200, 0.0),
            FAIL,
            None,
            id="zero-tolerance-fails-on-the-first-failure",
        ),
        pytest.param(
            STABLE,
            window(1_234, p99=12.5),
            LIMITS,
            FAIL,
            "p99 12.5 ms is 5.21x stable's 2.4 ms > 2.0x",
            id="p99-ratio-over",
        ),
        pytest.param(
            window(1_000, p99=0.2),
            window(1_234, p99=0.4),
            LIMITS,
            OK,
            None,
            id="sub-millisecond-noise-passes-over-the-floor",
        ),
        pytest.param(
            window(1_000, p99=0.2),
            window(1_234, p99=3.0),
            LIMITS,
            FAIL,
            "p99 3.0 ms is 3.0x stable's 0.2 ms (1.0 ms floor) > 2.0x",
            id="floor-applies-to-the-stable-side-too",
        ),
        pytest.param(
            window(1_000, p99=0.0),
            window(1_234, p99=0.0),
            AnalysisLimits(200, 0.01, max_latency_ratio=2.0, latency_floor_ms=0.0),
            OK,
            None,
            id="zero-over-zero-without-floor-is-even",
        ),
        pytest.param(
            window(1_000, p99=0.0),
            window(1_234, p99=0.5),
            AnalysisLimits(200, 0.01, max_latency_ratio=2.0, latency_floor_ms=0.0),
            FAIL,
            "p99 0.5 ms is infx stable's 0 ms > 2.0x",
            id="stable-at-zero-without-floor",
        ),
        pytest.param(
            STABLE,
            window(1_234, p99=None),
            LIMITS,
            HOLD,
            "inconclusive: no p99 measured on canary",
            id="no-p99-on-canary",
        ),
        pytest.param(
            window(1_000, p99=None, queue=None),
            window(1_234, p99=None),
            LIMITS,
            HOLD,
            "inconclusive: no p99 measured on canary and stable; inconclusive: no queue measured on stable",
            id="missing-measures-each-named",
        ),
        pytest.param(
            window(1_000, p99=None, queue=None),
            window(1_234, p99=None, queue=None),
            FAILURES_ONLY,
            OK,
            "1,234 canary and 1,000 stable requests (200 required); failure ratio 0.000 <= 0.010 "
            "(0 of 1,234 requests)",
            id="unset-ratio-limits-are-not-checked",
        ),
        pytest.param(
            STABLE,
            window(1_234, queue=8.0),
            LIMITS,
            FAIL,
            "queue 8.0 ms is 4.0x stable's 2.0 ms > 3.0x",
            id="queue-ratio-over",
        ),
        pytest.param(
            STABLE,
            window(1_234, 40, p99=None),
            LIMITS,
            FAIL,
            "failure ratio 0.032 > 0.010 (40 of 1,234 requests)",
            id="failed-beats-inconclusive",
        ),
        pytest.param(
            STABLE,
            window(1_234, 40, p99=12.5),
            LIMITS,
            FAIL,
            "failure ratio 0.032 > 0.010 (40 of 1,234 requests); p99 12.5 ms is 5.21x stable's 2.4 ms > 2.0x",
            id="every-failed-check-is-named",
        ),
        pytest.param(
            None,
            window(1_234, p99=40.0),
            LIMITS,
            OK,
            "1,234 canary requests (200 required); failure ratio 0.000 <= 0.010 (0 of 1,234 requests); "
            "p99 40.0 ms, not compared: no stable baseline; queue 2.0 ms, not compared: no stable baseline",
            id="canary-at-100-has-no-baseline",
        ),
        pytest.param(
            None,
            window(37),
            LIMITS,
            HOLD,
            "inconclusive: 37 of 200 requests on canary",
            id="canary-at-100-still-needs-min-requests",
        ),
    ],
)
def test_assess(
    stable: VariantWindow | None,
    canary: VariantWindow,
    limits: AnalysisLimits,
    verdict: Verdict,
    message: str | None,
) -> None:
    assessment = assess(stable, canary, limits)
    assert assessment.verdict is verdict
    if message is not None:
        assert assessment.message == message
    assert assessment.verdict is worst(check.verdict for check in assessment.checks)


def test_checks_keep_measured_values_and_limits_for_status() -> None:
    checks = {check.name: check for check in assess(STABLE, window(200, 40, p99=12.5), LIMITS).checks}
    assert list(checks) == ["requests", "failureRatio", "p99Latency", "queueTime"]
    assert (checks["failureRatio"].verdict, checks["failureRatio"].value, checks["failureRatio"].limit) == (
        FAIL,
        0.2,
        0.01,
    )
    assert checks["p99Latency"].value == pytest.approx(12.5 / 2.4)
    assert (checks["requests"].verdict, checks["requests"].value) == (OK, 200.0)


@pytest.mark.parametrize(
    ("a", "b", "worse"),
    [
        (FAIL, HOLD, True),
        (HOLD, OK, True),
        (FAIL, OK, True),
        (OK, HOLD, False),
        (HOLD, FAIL, False),
        (HOLD, HOLD, False),
    ],
)
def test_verdicts_are_totally_ordered(a: Verdict, b: Verdict, worse: bool) -> None:
    assert is_worse(a, b) is worse


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [([], OK), ([OK, OK], OK), ([OK, HOLD, OK], HOLD), ([HOLD, FAIL, OK], FAIL)],
)
def test_worst(verdicts: list[Verdict], expected: Verdict) -> None:
    assert worst(verdicts) is expected


@pytest.mark.parametrize(
    ("requests", "failures"),
    [(-1, 0), (10, -1), (10, 11)],
)
def test_a_window_refuses_impossible_counts(requests: int, failures: int) -> None:
    with pytest.raises(ValueError, match="failures <= requests"):
        VariantWindow(requests, failures)


@pytest.mark.parametrize(
    ("limits", "problems"),
    [
        (LIMITS, []),
        (
            AnalysisLimits(0, 0.01),
            ["spec.rollout.analysis.minRequests: 0 is below 1; a verdict needs traffic"],
        ),
        (AnalysisLimits(200, 1.5), ["spec.rollout.analysis.maxFailureRatio: 1.5 is not within 0..1"]),
        (
            AnalysisLimits(200, 0.01, max_latency_ratio=0.0, max_queue_ratio=-1.0),
            [
                "spec.rollout.analysis.maxLatencyRatio: 0.0 is not above 0",
                "spec.rollout.analysis.maxQueueRatio: -1.0 is not above 0",
            ],
        ),
        (
            AnalysisLimits(200, 0.01, latency_floor_ms=-0.5),
            ["spec.rollout.analysis.latencyFloorMs: -0.5 is negative"],
        ),
    ],
)
def test_validate_limits(limits: AnalysisLimits, problems: list[str]) -> None:
    assert validate_limits(limits) == problems


def test_assess_refuses_invalid_limits() -> None:
    with pytest.raises(ValueError, match=r"limits\.minRequests"):
        assess(STABLE, window(1_000), AnalysisLimits(0, 0.01))
