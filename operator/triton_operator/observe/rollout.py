"""What a routed model's traffic looked like, from Triton's own per-version counters (pure).

A routed model (a canary rollout or an A/B experiment) serves its public name through the router, and
its versions under `spec.repository_name(...)`, the target. Every figure is of the target's versions,
summed over the server's pods, between a baseline (the step's start) and the latest scrape: requests
and failures from Triton's request counters, the observed share from `nv_inference_count` (a batching
router folds requests, inferences are what each version really served), p99 from the latency summary.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triton_operator.observe.metrics import Scrape
from triton_operator.rollout.analysis import VariantWindow


def counter_delta(before: float | None, after: float) -> float:
    """How much a cumulative counter grew; a smaller value (or a new series) means it restarted at 0."""
    if before is None or after < before:
        return after
    return after - before


@dataclass(frozen=True)
class VersionSample:
    """One version's cumulative figures on one pod: requests by outcome as the router counted them
    (client requests: an error response is a failure), inferences and latencies as Triton did."""

    success: float
    failure: float
    inferences: float
    queue_us: float
    p50_us: float | None
    p99_us: float | None


# (pod, version) -> that version's sample on that pod.
Counters = Mapping[tuple[str, str], VersionSample]


def target_counters(
    scrapes: Mapping[str, Scrape], target: str, router: str
) -> dict[tuple[str, str], VersionSample]:
    """Each version of `target` in each pod's latest scrape; requests from `router`'s own counts."""
    samples = {}
    for pod, scrape in scrapes.items():
        for (model, version), c in scrape.snapshot.models.items():
            if model != target:
                continue
            routed = scrape.snapshot.routed.get((router, target, version))
            success, failure = (
                (routed.success, routed.failure) if routed else (c.success_count, c.failure_count)
            )
            samples[(pod, version)] = VersionSample(
                success, failure, c.inference_count, c.queue_duration_us, c.request_p50_us, c.request_p99_us
            )
    return samples


@dataclass(frozen=True)
class VersionWindow:
    """One version's traffic since the baseline: what the analysis judges and status shows."""

    version: str
    requests: int
    failures: int
    inferences: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    queue_ms: float | None

    def analysis(self) -> VariantWindow:
        return VariantWindow(self.requests, self.failures, self.p99_ms, self.queue_ms)


def _max(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def version_window(baseline: Counters, current: Counters, version: str, seconds: float) -> VersionWindow:
    """Deltas of one version between two sets of samples (a counter that went down was reset)."""
    success = failure = inferences = queue_us = 0.0
    rows = [(pod_version, c) for pod_version, c in current.items() if pod_version[1] == version]
    for pod_version, now in rows:
        before = baseline.get(pod_version)
        success += counter_delta(before.success if before else None, now.success)
        failure += counter_delta(before.failure if before else None, now.failure)
        inferences += counter_delta(before.inferences if before else None, now.inferences)
        queue_us += counter_delta(before.queue_us if before else None, now.queue_us)
    p50 = _max([c.p50_us for _, c in rows])
    p99 = _max([c.p99_us for _, c in rows])
    return VersionWindow(
        version=version,
        requests=int(success + failure),
        failures=int(failure),
        inferences=int(inferences),
        seconds=seconds,
        p50_ms=None if p50 is None else p50 / 1000.0,
        p99_ms=None if p99 is None else p99 / 1000.0,
        queue_ms=queue_us / success / 1000.0 if success else None,
    )


@dataclass(frozen=True)
class WindowStart:
    """Where a window of traffic starts: the counters once the weights for `key` (a canary's step, an
    experiment's weights) were in place on every replica or in the gateway, and when (time.monotonic())."""

    key: Hashable
    counters: Counters
    at: float


def step_windows(
    start: WindowStart | None,
    key: Hashable,
    applied: bool,
    current: Counters,
    variants: Sequence[str],
    now: float,
) -> tuple[WindowStart | None, dict[str, VersionWindow]]:
    """Each variant's traffic since the window for `key` started, and where it starts.

    A window starts empty at the first look after the weights for `key` are applied everywhere (traffic
    sent before then was split by the earlier weights); a new key starts a new window.
    """
    if start is None or start.key != key:
        if not applied:
            return None, {}
        return WindowStart(key, dict(current), now), {}
    seconds = now - start.at
    return start, {v: version_window(start.counters, current, v, seconds) for v in variants}


def traffic_entries(
    windows: Mapping[str, VersionWindow], roles: Mapping[str, str], weights: Mapping[str, int]
) -> list[dict[str, Any]]:
    """status.traffic: per version its role, desired weight and what the window measured."""
    total = sum(w.inferences for w in windows.values())
    entries = []
    for version, role in roles.items():
        entry: dict[str, Any] = {"version": version, "role": role, "desiredWeight": weights.get(version, 0)}
        window = windows.get(version)
        if window is not None:
            entry["requests"] = window.requests
            if total:
                entry["observedShare"] = round(100.0 * window.inferences / total, 1)
            if window.seconds > 0:
                entry["requestsPerSecond"] = round(window.requests / window.seconds, 2)
            if window.requests:
                entry["failureRatio"] = round(window.failures / window.requests, 4)
            if window.p50_ms is not None:
                entry["p50Ms"] = round(window.p50_ms, 2)
            if window.p99_ms is not None:
                entry["p99Ms"] = round(window.p99_ms, 2)
        entries.append(entry)
    return entries


def pool_counters(
    scrapes_by_pool: Mapping[str, Mapping[str, Scrape]], model: str
) -> dict[tuple[str, str], VersionSample]:
    """A model split across servers: its figures on each pod of each pool, keyed (pod, pool).

    Each pool's copy serves `model` through the operator's router, which counts every client request
    by outcome (an error response is no failure to Triton's own request counters, so only the router
    sees it); inferences and latency are Triton's own counters of the public name (all versions).
    Without router counts (a copy not routed yet), Triton's request counters stand in.
    """
    samples: dict[tuple[str, str], VersionSample] = {}
    for pool, scrapes in scrapes_by_pool.items():
        for pod, scrape in scrapes.items():
            rows = [c for (name, _), c in scrape.snapshot.models.items() if name == model]
            if not rows:
                continue
            outcomes = [c for (router, _, _), c in scrape.snapshot.routed.items() if router == model]
            if outcomes:
                success = float(sum(c.success for c in outcomes))
                failure = float(sum(c.failure for c in outcomes))
            else:
                success = float(sum(c.success_count for c in rows))
                failure = float(sum(c.failure_count for c in rows))
            samples[(f"{pool}/{pod}", pool)] = VersionSample(
                success=success,
                failure=failure,
                inferences=sum(c.inference_count for c in rows),
                queue_us=sum(c.queue_duration_us for c in rows),
                p50_us=_max([c.request_p50_us for c in rows]),
                p99_us=_max([c.request_p99_us for c in rows]),
            )
    return samples


# (status, reason, message) of a condition, before it is one.
Said = tuple[bool, str, str]


@dataclass(frozen=True)
class TrafficOutcome:
    """What status says about a model's traffic, and how its conditions read."""

    rollout: dict[str, Any] | None
    traffic: list[dict[str, Any]]
    # Said for Ready, Progressing and Degraded; None keeps what the model's own facts say.
    ready: Said | None
    progressing: Said
    degraded: Said | None = None
    # The variant most traffic goes to.
    served: str | None = None
    # Only a change ends what it says (a rollback, an abort, a variant whose staging failed): Stalled.
    stalled: bool = False
