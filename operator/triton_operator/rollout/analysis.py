"""Canary analysis: one window of measurements per variant -> a verdict, each check alone, the worst wins."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    """An analysis verdict; totally ordered by how bad it is (`is_worse`, `worst`)."""

    SUCCESSFUL = "Successful"
    INCONCLUSIVE = "Inconclusive"
    FAILED = "Failed"


_RANK = {Verdict.SUCCESSFUL: 0, Verdict.INCONCLUSIVE: 1, Verdict.FAILED: 2}


def is_worse(a: Verdict, b: Verdict) -> bool:
    """Whether verdict a is worse than b (Successful < Inconclusive < Failed)."""
    return _RANK[a] > _RANK[b]


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst of the verdicts; Successful when there are none."""
    return max(verdicts, key=_RANK.__getitem__, default=Verdict.SUCCESSFUL)


@dataclass(frozen=True)
class VariantWindow:
    """One variant's traffic in one analysis window (the current step's, since it started)."""

    # Every request in the window, failed ones included.
    requests: int
    failures: int
    # The window's p99 request latency and the queue time (the same statistic for both variants), or None
    # when the variant reported none.
    p99_ms: float | None = None
    queue_ms: float | None = None

    def __post_init__(self) -> None:
        if self.requests < 0 or self.failures < 0 or self.failures > self.requests:
            raise ValueError(
                f"a window needs 0 <= failures <= requests, got {self.failures} of {self.requests}"
            )


@dataclass(frozen=True)
class AnalysisLimits:
    """What a canary must show, per window, to pass."""

    # Requests each variant needs in the window before any check may pass.
    min_requests: int
    # The canary's failed / all requests must stay at or below this (absolute, not relative to stable).
    max_failure_ratio: float
    # canary p99 / stable p99 must stay at or below this; None: no latency check.
    max_latency_ratio: float | None = None
    # canary queue time / stable queue time must stay at or below this; None: no queue check.
    max_queue_ratio: float | None = None
    # Both sides of a latency or queue ratio count as at least this many ms, so sub-millisecond noise
    # (0.4 ms vs 0.2 ms is "2x") does not fail a canary, and a stable at 0 ms divides nothing by zero.
    latency_floor_ms: float = 1.0


def validate_limits(limits: AnalysisLimits, path: str = "spec.rollout.analysis") -> list[str]:
    """What is wrong with the limits, one message per problem naming its field path."""
    problems = []
    if limits.min_requests < 1:
        problems.append(f"{path}.minRequests: {limits.min_requests} is below 1; a verdict needs traffic")
    if not 0.0 <= limits.max_failure_ratio <= 1.0:
        problems.append(f"{path}.maxFailureRatio: {limits.max_failure_ratio} is not within 0..1")
    for name, ratio in (
        ("maxLatencyRatio", limits.max_latency_ratio),
        ("maxQueueRatio", limits.max_queue_ratio),
    ):
        if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
            problems.append(f"{path}.{name}: {ratio} is not above 0")
    if not (math.isfinite(limits.latency_floor_ms) and limits.latency_floor_ms >= 0):
        problems.append(f"{path}.latencyFloorMs: {limits.latency_floor_ms} is negative")
    return problems


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, its measured value and limit (kept in status), and why, with the numbers."""

    name: str
    verdict: Verdict
    message: str
    value: float | None = None
    limit: float | None = None


@dataclass(frozen=True)
class Assessment:
    """A window's verdict: the worst check's, with the messages of every check that has it."""

    verdict: Verdict
    message: str
    checks: tuple[CheckResult, ...]


def _decimals(limit: float) -> int:
    """Decimals that show a failure-ratio limit exactly: 3 (0.010), more for small ones (0.0005)."""
    return next((d for d in range(3, 9) if round(limit, d) == limit), 9)


def format_ms(value: float) -> str:
    """Milliseconds: 1,234, 12.5, 2.4, 0.43."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _times(value: float) -> str:
    """A ratio of latencies: 5.21, 2.0, 1.25."""
    if math.isinf(value):
        return "inf"
    text = f"{value:.2f}"
    return text[:-1] if text.endswith("0") else text


def _sample_check(stable: VariantWindow | None, canary: VariantWindow, limits: AnalysisLimits) -> CheckResult:
    """Enough requests on each variant (only the canary when there is no stable baseline)."""
    need = limits.min_requests
    windows = [("canary", canary)] + ([("stable", stable)] if stable is not None else [])
    short = [(role, window) for role, window in windows if window.requests < need]
    fewest = float(min(window.requests for _, window in windows))
    if short:
        parts = ", ".join(f"{window.requests:,} of {need:,} requests on {role}" for role, window in short)
        return CheckResult("requests", Verdict.INCONCLUSIVE, f"inconclusive: {parts}", fewest, float(need))
    counts = " and ".join(f"{window.requests:,} {role}" for role, window in windows)
    message = f"{counts} requests ({need:,} required)"
    return CheckResult("requests", Verdict.SUCCESSFUL, message, fewest, float(need))


def _failure_check(canary: VariantWindow, limits: AnalysisLimits, too_few: CheckResult) -> CheckResult:
    """The canary's failure ratio, judged at min_requests, or earlier once failures alone exceed the limit."""
    limit, decimals = limits.max_failure_ratio, _decimals(limits.max_failure_ratio)
    ratio = canary.failures / canary.requests if canary.requests else 0.0
    measured = f"failure ratio {ratio:.{decimals}f}"
    bound = f"{limit:.{decimals}f}"
    counts = f"{canary.failures:,} of {canary.requests:,} requests"
    if canary.requests >= limits.min_requests:
        if ratio > limit:
            return CheckResult(
                "failureRatio", Verdict.FAILED, f"{measured} > {bound} ({counts})", ratio, limit
            )
        return CheckResult(
            "failureRatio", Verdict.SUCCESSFUL, f"{measured} <= {bound} ({counts})", ratio, limit
        )
    # Failures only grow within a window: once they are over the limit at the minimum sample size, the
    # canary fails the moment it reaches min_requests however the rest go, so waiting only serves more errors.
    if canary.failures / limits.min_requests > limit:
        return CheckResult(
            "failureRatio",
            Verdict.FAILED,
            f"{measured} > {bound} ({counts}): failing early, {canary.failures:,} failures are already "
            f"over {bound} of the {limits.min_requests:,} requests required",
            ratio,
            limit,
        )
    return CheckResult("failureRatio", Verdict.INCONCLUSIVE, too_few.message, ratio, limit)


def _ratio_check(
    name: str,
    label: str,
    stable_ms: float | None,
    canary_ms: float | None,
    limit: float,
    limits: AnalysisLimits,
    too_few: CheckResult,
) -> CheckResult:
    """canary / stable of one latency measure, both taken as at least the floor."""
    if too_few.verdict is not Verdict.SUCCESSFUL:
        return CheckResult(name, Verdict.INCONCLUSIVE, too_few.message, None, limit)
    missing = [role for role, value in (("canary", canary_ms), ("stable", stable_ms)) if value is None]
    if missing or canary_ms is None or stable_ms is None:
        return CheckResult(
            name,
            Verdict.INCONCLUSIVE,
            f"inconclusive: no {label} measured on {' and '.join(missing)}",
            None,
            limit,
        )
    floor = limits.latency_floor_ms
    over, under = max(canary_ms, floor), max(stable_ms, floor)
    ratio = over / under if under > 0 else (1.0 if over == 0 else math.inf)
    note = f" ({format_ms(floor)} ms floor)" if min(canary_ms, stable_ms) < floor else ""
    measured = (
        f"{label} {format_ms(canary_ms)} ms is {_times(ratio)}x stable's {format_ms(stable_ms)} ms{note}"
    )
    if ratio > limit:
        return CheckResult(name, Verdict.FAILED, f"{measured} > {_times(limit)}x", ratio, limit)
    return CheckResult(name, Verdict.SUCCESSFUL, f"{measured} <= {_times(limit)}x", ratio, limit)


def _no_baseline(name: str, label: str, canary_ms: float | None, limit: float) -> CheckResult:
    """A ratio check with the canary at 100%: nothing to compare with, so it neither passes nor holds."""
    shown = f"{format_ms(canary_ms)} ms" if canary_ms is not None else "not measured"
    return CheckResult(
        name, Verdict.SUCCESSFUL, f"{label} {shown}, not compared: no stable baseline", None, limit
    )


def _unique(messages: Sequence[str]) -> list[str]:
    """Messages in order, each once."""
    return list(dict.fromkeys(messages))


def assess(stable: VariantWindow | None, canary: VariantWindow, limits: AnalysisLimits) -> Assessment:
    """The verdict of one window: each check alone, the worst wins, its messages name numbers and limits.

    Checks: requests (each variant needs min_requests, else Inconclusive), the canary's failure ratio,
    and, when limits set them, canary/stable p99 latency and queue time (both over `latency_floor_ms`).
    Too little data is Inconclusive, never Failed, except that a canary whose failures already exceed
    max_failure_ratio * min_requests fails early: it would fail at min_requests whatever came next.
    `stable` is None when the canary takes 100% and the stable serves nothing: the ratio checks then pass
    uncompared (pass the previous step's stable window instead to keep comparing).
    """
    problems = validate_limits(limits, path="limits")
    if problems:
        raise ValueError("; ".join(problems))
    sample = _sample_check(stable, canary, limits)
    checks = [sample, _failure_check(canary, limits, sample)]
    measures = (
        ("p99Latency", "p99", limits.max_latency_ratio, canary.p99_ms, stable.p99_ms if stable else None),
        (
            "queueTime",
            "queue",
            limits.max_queue_ratio,
            canary.queue_ms,
            stable.queue_ms if stable else None,
        ),
    )
    for name, label, limit, canary_ms, stable_ms in measures:
        if limit is None:
            continue
        if stable is None:
            checks.append(_no_baseline(name, label, canary_ms, limit))
        else:
            checks.append(_ratio_check(name, label, stable_ms, canary_ms, limit, limits, sample))
    verdict = worst(check.verdict for check in checks)
    message = "; ".join(_unique([check.message for check in checks if check.verdict is verdict]))
    return Assessment(verdict, message, tuple(checks))
