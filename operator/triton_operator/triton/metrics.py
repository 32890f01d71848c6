"""Triton's Prometheus metrics: parse a scrape into typed counters, turn two scrapes into rates.

Everything here is pure except `fetch_metrics`. Names and units are Triton's (microseconds, counts).
Checked against Triton 2.51: the request and queue duration counters (and the latency summaries)
accumulate over successful requests only; failures count in `nv_inference_request_failure` by
reason and in executions, never in durations. Averages therefore divide by successes.
"""

from __future__ import annotations

import http.client
import math
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from triton_operator.triton.client import (
    PROBE_TIMEOUT_S,
    TritonEndpoint,
    TritonError,
    TritonTimeout,
    TritonUnreachable,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

# Sample name -> ModelCounters field, for the cumulative per-model counters we read.
_COUNTERS = {
    "nv_inference_request_success": "success_count",
    "nv_inference_request_failure": "failure_count",  # one series per reason; summed
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "execution_count",
    "nv_inference_request_duration_us": "request_duration_us",
    "nv_inference_queue_duration_us": "queue_duration_us",
}
# Summary name -> (field for quantile 0.5, field for quantile 0.99); present with summary_latencies=true.
_SUMMARIES = {
    "nv_inference_request_summary_us": ("request_p50_us", "request_p99_us"),
    "nv_inference_queue_summary_us": ("queue_p50_us", "queue_p99_us"),
}
_QUANTILES = {0.5: 0, 0.99: 1}
# Triton's counters are uint64: a sample outside [0, 2**64) (negative, NaN, Inf, 1e400) is not a count,
# and kept it would make rates negative or infinite (status is JSON: no NaN, no Infinity).
_COUNT_LIMIT = 2.0**64
# Bytes of /metrics read at most: Triton writes about 3 KB per loaded model.
METRICS_LIMIT = 16 << 20
_GPU_SERIES = {
    "nv_gpu_utilization": "utilization",
    "nv_gpu_memory_used_bytes": "memory_used_bytes",
    "nv_gpu_memory_total_bytes": "memory_total_bytes",
}
_CPU_SERIES = {
    "nv_cpu_utilization": "utilization",
    "nv_cpu_memory_used_bytes": "memory_used_bytes",
    "nv_cpu_memory_total_bytes": "memory_total_bytes",
}

ModelKey = tuple[str, str]
"""(model name, version) as Triton labels its series."""


@dataclass(frozen=True)
class ModelCounters:
    """One model version's cumulative counters on one pod, plus its current latency quantiles."""

    model: str
    version: str
    success_count: int = 0
    failure_count: int = 0
    inference_count: int = 0
    execution_count: int = 0
    request_duration_us: int = 0
    queue_duration_us: int = 0
    request_p50_us: float | None = None
    request_p99_us: float | None = None
    queue_p50_us: float | None = None
    queue_p99_us: float | None = None


@dataclass(frozen=True)
class GpuStats:
    """One GPU (by UUID) as Triton reports it; utilization is a fraction in [0, 1]."""

    uuid: str
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class CpuStats:
    """The pod's CPU and memory as Triton reports them; utilization is a fraction in [0, 1]."""

    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None


@dataclass(frozen=True)
class RoutedCounts:
    """Requests a router forwarded to one variant, by outcome (cumulative)."""

    success: int = 0
    failure: int = 0


# The counter family the operator's router writes (render/router_model.py): a model that answers with
# an error response is no failure to Triton's own nv_inference_request_failure; the router sees it.
ROUTER_FAMILY = "tritonoperator_router_requests_total"


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape of one pod: per (model, version) counters, GPUs by UUID, and CPU when reported."""

    models: Mapping[ModelKey, ModelCounters] = field(default_factory=dict)
    gpus: Mapping[str, GpuStats] = field(default_factory=dict)
    cpu: CpuStats | None = None
    # The operator's routers: (router, model, version) -> requests forwarded there (success, failure).
    routed: Mapping[tuple[str, str, str], RoutedCounts] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRates:
    """One model version's traffic over a window: rates, the deltas behind them, and quantiles.

    Deltas are kept (not only averages) so that per-pod windows aggregate exactly.
    """

    model: str
    version: str
    window_s: float
    request_rate: float  # requests/s, successes plus failures
    failure_rate: float  # failed requests/s
    success_count: int
    failure_count: int
    inference_count: int
    execution_count: int
    request_duration_us: int
    queue_duration_us: int
    p50_latency_us: float | None = None
    p99_latency_us: float | None = None
    p50_queue_us: float | None = None
    p99_queue_us: float | None = None

    @property
    def request_count(self) -> int:
        """Requests answered in the window, successful or not."""
        return self.success_count + self.failure_count

    @property
    def failure_ratio(self) -> float | None:
        """Failed share of requests in the window; None without requests."""
        return self.failure_count / self.request_count if self.request_count else None

    @property
    def avg_latency_us(self) -> float | None:
        """Mean end-to-end request latency of successful requests; None without any."""
        return self.request_duration_us / self.success_count if self.success_count else None

    @property
    def avg_queue_us(self) -> float | None:
        """Mean time successful requests waited in Triton's scheduler queue; None without any."""
        return self.queue_duration_us / self.success_count if self.success_count else None

    @property
    def batching_efficiency(self) -> float | None:
        """Inferences per model execution: above 1 means dynamic batching merged requests."""
        return self.inference_count / self.execution_count if self.execution_count else None


def parse_metrics(text: str) -> MetricsSnapshot:
    """Parse Triton's `/metrics` text; series we do not use are ignored, and so are values that cannot
    be counts, durations or sizes (negative, NaN, infinite). TritonError when it is not Prometheus text."""
    models: dict[ModelKey, dict[str, float]] = {}
    gpus: dict[str, dict[str, float]] = {}
    cpu: dict[str, float] = {}
    routed: dict[tuple[str, str, str], dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        # The parser quotes the offending line, which may be megabytes long (of any bytes).
        raise TritonError(f"Triton's /metrics answer is not Prometheus text: {_quoted(exc)}") from None
    for family in families:
        name = family.name
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            plausible = _plausible(value)
            if name in (ROUTER_FAMILY, ROUTER_FAMILY.removesuffix("_total")) and "router" in labels:
                key = (labels["router"], labels.get("model", ""), labels.get("version", ""))
                outcome = labels.get("outcome", "")
                counts = routed.setdefault(key, {})
                if plausible:
                    counts[outcome] = counts.get(outcome, 0.0) + value
            elif name in _COUNTERS and sample.name in (name, f"{name}_total") and "model" in labels:
                # The parser names counter samples `<family>_total`; Triton's text has no suffix.
                fields = models.setdefault(_model_key(labels), {})
                # Summing also folds in series split by extra labels (failure `reason`).
                if plausible:
                    fields[_COUNTERS[name]] = fields.get(_COUNTERS[name], 0.0) + value
            elif name in _SUMMARIES and sample.name == name and "model" in labels:
                fields = models.setdefault(_model_key(labels), {})
                index = _QUANTILES.get(_quantile(labels.get("quantile")))
                # Triton writes `Nan` for a quantile until the model has seen traffic.
                if index is not None and plausible:
                    fields[_SUMMARIES[name][index]] = value
            elif name in _GPU_SERIES and "gpu_uuid" in labels:
                gpus.setdefault(labels["gpu_uuid"], {})[_GPU_SERIES[name]] = value if plausible else math.nan
            elif name in _CPU_SERIES:
                cpu[_CPU_SERIES[name]] = value if plausible else math.nan
    return MetricsSnapshot(
        models={key: _model_counters(key, fields) for key, fields in models.items()},
        gpus={uuid: _gpu_stats(uuid, fields) for uuid, fields in gpus.items()},
        cpu=_cpu_stats(cpu) if cpu else None,
        routed={
            key: RoutedCounts(int(c.get("success", 0.0)), int(c.get("failure", 0.0)))
            for key, c in routed.items()
        },
    )


def _quoted(said: object, limit: int = 200) -> str:
    """The start of an error that quotes a pod's bytes, fit for a status message (printable only)."""
    return "".join(c if c.isprintable() else "\ufffd" for c in str(said)[:limit])


def _model_key(labels: Mapping[str, str]) -> ModelKey:
    return (labels["model"], labels.get("version", ""))


def _quantile(raw: str | None) -> float:
    try:
        return float(raw) if raw is not None else math.nan
    except ValueError:
        return math.nan


def _model_counters(key: ModelKey, fields: Mapping[str, float]) -> ModelCounters:
    def count(name: str) -> int:
        return int(fields.get(name, 0.0))

    return ModelCounters(
        model=key[0],
        version=key[1],
        success_count=count("success_count"),
        failure_count=count("failure_count"),
        inference_count=count("inference_count"),
        execution_count=count("execution_count"),
        request_duration_us=count("request_duration_us"),
        queue_duration_us=count("queue_duration_us"),
        request_p50_us=fields.get("request_p50_us"),
        request_p99_us=fields.get("request_p99_us"),
        queue_p50_us=fields.get("queue_p50_us"),
        queue_p99_us=fields.get("queue_p99_us"),
    )


def _gpu_stats(uuid: str, fields: Mapping[str, float]) -> GpuStats:
    return GpuStats(
        uuid=uuid,
        utilization=_finite(fields.get("utilization")),
        memory_used_bytes=_as_int(fields.get("memory_used_bytes")),
        memory_total_bytes=_as_int(fields.get("memory_total_bytes")),
    )


def _cpu_stats(fields: Mapping[str, float]) -> CpuStats:
    return CpuStats(
        utilization=_finite(fields.get("utilization")),
        memory_used_bytes=_as_int(fields.get("memory_used_bytes")),
        memory_total_bytes=_as_int(fields.get("memory_total_bytes")),
    )


def _plausible(value: float) -> bool:
    """Whether a sample can be a count, a duration, a size or a utilization (False for NaN)."""
    return 0.0 <= value < _COUNT_LIMIT


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _as_int(value: float | None) -> int | None:
    finite = _finite(value)
    return int(finite) if finite is not None else None


_DELTA_FIELDS = tuple(_COUNTERS.values())


def model_rates(previous: ModelCounters | None, current: ModelCounters, elapsed_s: float) -> ModelRates:
    """Rates of one model version between two scrapes of the same pod, `elapsed_s` apart.

    A model absent from the previous scrape (just loaded) counts from zero. If any counter went
    down, the pod restarted (or the model was reloaded) between scrapes: counters restarted at zero,
    so the current values are the best estimate of the window's traffic, never a negative delta.
    """
    if not elapsed_s > 0 or not math.isfinite(elapsed_s):
        raise ValueError(f"elapsed_s must be a positive number of seconds between scrapes, got {elapsed_s!r}")
    now = {f: getattr(current, f) for f in _DELTA_FIELDS}
    before = (
        {f: getattr(previous, f) for f in _DELTA_FIELDS} if previous is not None else dict.fromkeys(now, 0)
    )
    reset = any(now[f] < before[f] for f in _DELTA_FIELDS)
    delta = now if reset else {f: now[f] - before[f] for f in _DELTA_FIELDS}
    served = delta["success_count"] > 0
    return ModelRates(
        model=current.model,
        version=current.version,
        window_s=elapsed_s,
        request_rate=(delta["success_count"] + delta["failure_count"]) / elapsed_s,
        failure_rate=delta["failure_count"] / elapsed_s,
        **delta,
        # Triton's quantiles cover its own sliding window; a window with no successful request
        # would otherwise report stale numbers from earlier traffic.
        p50_latency_us=current.request_p50_us if served else None,
        p99_latency_us=current.request_p99_us if served else None,
        p50_queue_us=current.queue_p50_us if served else None,
        p99_queue_us=current.queue_p99_us if served else None,
    )


def rates(
    previous: MetricsSnapshot, current: MetricsSnapshot, elapsed_s: float
) -> dict[ModelKey, ModelRates]:
    """Per (model, version) rates of one pod between two scrapes; models gone from `current` drop out."""
    return {
        key: model_rates(previous.models.get(key), counters, elapsed_s)
        for key, counters in current.models.items()
    }


def aggregate(per_pod: Iterable[ModelRates]) -> ModelRates:
    """Combine one model version's rates from every pod into the pool's view.

    Rates and counts add up, so averages and batching efficiency come out request-weighted. Quantiles
    cannot be averaged: the pool's p99 lies between the pods' p99s, so the max is a safe upper bound
    that still shows one slow pod, where a mean would hide it behind healthy ones. Same for p50.
    """
    items = list(per_pod)
    if not items:
        raise ValueError("aggregate() needs the rates of at least one pod")
    first = items[0]
    strangers = sorted({(r.model, r.version) for r in items} - {(first.model, first.version)})
    if strangers:
        raise ValueError(
            f"aggregate() combines one model version; got {first.model}:{first.version} and {strangers}"
        )
    total = replace(
        first,
        window_s=max(r.window_s for r in items),
        request_rate=sum(r.request_rate for r in items),
        failure_rate=sum(r.failure_rate for r in items),
        **{f: sum(getattr(r, f) for r in items) for f in _DELTA_FIELDS},
        p50_latency_us=_max_known(r.p50_latency_us for r in items),
        p99_latency_us=_max_known(r.p99_latency_us for r in items),
        p50_queue_us=_max_known(r.p50_queue_us for r in items),
        p99_queue_us=_max_known(r.p99_queue_us for r in items),
    )
    return total


def _max_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


class _DeadlineSocket(socket.socket):
    """A connected socket whose every read and write gets only what is left of one deadline.

    A socket timeout bounds each operation alone: a pod that sends its answer one byte at a time, each
    within the timeout, would hold the caller for as long as it likes (16 MiB at a byte a second is
    half a year), headers included.
    """

    deadline: float

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer took longer than its deadline")
        self.settimeout(left)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        return super().recv(bufsize, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._arm()
        super().sendall(data, flags)


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection on a `_DeadlineSocket`: connect, request, headers and body share `deadline`."""

    def __init__(self, host: str, *, deadline: float, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        super().connect()
        plain = self.sock
        bounded = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        bounded.deadline = self.deadline
        self.sock = bounded


class _DeadlineHandler(urllib.request.HTTPHandler):
    """urllib's HTTP handler with `_DeadlineConnection`s (proxies and redirects work as before)."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            return _DeadlineConnection(host, deadline=self.deadline, **kwargs)

        return self.do_open(connection, req)


def _open(url: str, timeout_s: float) -> Any:
    """GET `url`; `timeout_s` bounds the whole exchange (connection, request, headers, body)."""
    opener = urllib.request.build_opener(_DeadlineHandler(time.monotonic() + timeout_s))
    return opener.open(url, timeout=timeout_s)


def fetch_metrics(ep: TritonEndpoint, *, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """GET the pod's `/metrics` text; TritonTimeout when the whole answer has not come within `timeout_s`."""
    try:
        with _open(ep.metrics_url, timeout_s) as response:
            body: bytes = response.read(METRICS_LIMIT + 1)
    except urllib.error.HTTPError as exc:
        raise TritonError(
            f"Triton metrics at {ep.metrics_url} answered HTTP {exc.code}",
            endpoint=ep.metrics_url,
            status=exc.code,
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        # URLError wraps a refused or timed-out connect; a read timeout surfaces as TimeoutError.
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise TritonTimeout(
                f"Triton metrics at {ep.metrics_url} did not answer within {timeout_s:g} s",
                endpoint=ep.metrics_url,
            ) from None
        # http.client quotes a bad status line whole: up to 64 KiB of whatever bytes the pod sent.
        raise TritonUnreachable(
            f"cannot read Triton metrics at {ep.metrics_url}: {_quoted(reason) or type(exc).__name__}",
            endpoint=ep.metrics_url,
        ) from None
    if len(body) > METRICS_LIMIT:
        # A pod is no place to exhaust the operator's memory: Triton's own text is far smaller.
        raise TritonError(
            f"Triton metrics at {ep.metrics_url} are larger than {METRICS_LIMIT} bytes",
            endpoint=ep.metrics_url,
        )
    return body.decode("utf-8", errors="replace")
