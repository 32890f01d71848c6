"""Triton's /metrics scrapes of a pool's pods, summed into status.metrics (pure).

Rates need two scrapes of the same pod; the first scrape of a pod gives only what a single scrape
can (quantiles, GPU figures). Figures are rounded so that noise does not rewrite the status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triton_operator.triton.metrics import MetricsSnapshot, ModelRates, rates


@dataclass(frozen=True)
class Scrape:
    snapshot: MetricsSnapshot
    at: float  # time.monotonic() of the scrape


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 2)


def _rate(value: float) -> float:
    return round(value, 2)


def _max(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def window_rates(previous: Scrape | None, current: Scrape) -> list[ModelRates]:
    """Per-model rates of one pod between two scrapes; empty without a previous scrape."""
    if previous is None or current.at <= previous.at:
        return []
    return list(rates(previous.snapshot, current.snapshot, current.at - previous.at).values())


def _gpu_figures(snapshot: MetricsSnapshot) -> dict[str, Any]:
    gpus = list(snapshot.gpus.values())
    if not gpus:
        return {}
    utilizations = [g.utilization for g in gpus if g.utilization is not None]
    used = [g.memory_used_bytes for g in gpus if g.memory_used_bytes is not None]
    figures: dict[str, Any] = {}
    if utilizations:
        figures["gpuUtilization"] = round(sum(utilizations) / len(utilizations), 3)
    if used:
        figures["gpuMemoryUsedBytes"] = int(sum(used))
    return figures


def pod_summary(previous: Scrape | None, current: Scrape) -> dict[str, Any]:
    """One pod's MetricsSummary (camelCase), from its last two scrapes."""
    window = window_rates(previous, current)
    summary: dict[str, Any] = {}
    if window:
        summary["inferenceRate"] = _rate(sum(r.request_rate - r.failure_rate for r in window))
        summary["failureRate"] = _rate(sum(r.failure_rate for r in window))
    for key, values in (
        ("p50LatencyMs", (r.p50_latency_us for r in window)),
        ("p99LatencyMs", (r.p99_latency_us for r in window)),
        ("queueP99Ms", (r.p99_queue_us for r in window)),
    ):
        value = _ms(_max(values))
        if value is not None:
            summary[key] = value
    return summary | _gpu_figures(current.snapshot)


def total_summary(per_pod: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The pool's summary: rates and memory summed; latencies worst-of (a mean would hide a slow pod)."""
    total: dict[str, Any] = {}
    for key in ("inferenceRate", "failureRate"):
        values = [p[key] for p in per_pod if key in p]
        if values:
            total[key] = _rate(sum(values))
    for key in ("p50LatencyMs", "p99LatencyMs", "queueP99Ms"):
        value = _max(p.get(key) for p in per_pod)
        if value is not None:
            total[key] = value
    utilizations = [p["gpuUtilization"] for p in per_pod if "gpuUtilization" in p]
    if utilizations:
        total["gpuUtilization"] = round(sum(utilizations) / len(utilizations), 3)
    memory = [p["gpuMemoryUsedBytes"] for p in per_pod if "gpuMemoryUsedBytes" in p]
    if memory:
        total["gpuMemoryUsedBytes"] = sum(memory)
    return total
