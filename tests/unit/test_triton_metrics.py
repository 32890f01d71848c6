"""Parsing real Triton metrics texts (tests/golden/triton, see capture.py) and turning scrapes into rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from triton_operator.triton.client import TritonEndpoint, TritonError
from triton_operator.triton.metrics import (
    METRICS_LIMIT,
    MetricsSnapshot,
    ModelCounters,
    ModelRates,
    RoutedCounts,
    aggregate,
    fetch_metrics,
    model_rates,
    parse_metrics,
    rates,
)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "triton"
CAPTURE = json.loads((GOLDEN / "capture.json").read_text())
ADDER = (CAPTURE["batched"]["model"], CAPTURE["batched"]["version"])
FAILING = (CAPTURE["failures"]["model"], CAPTURE["failures"]["version"])
SENT_OK = CAPTURE["batched"]["requests"]
SENT_FAILING = CAPTURE["failures"]["requests"]


def golden(name: str) -> MetricsSnapshot:
    return parse_metrics((GOLDEN / f"{name}.prom").read_text())


# --- parsing real scrapes -------------------------------------------------------------------------


def test_idle_scrape_lists_loaded_models_with_zero_counters_and_no_quantiles() -> None:
    snap = golden("idle")
    assert set(snap.models) == {ADDER, FAILING}
    for counters in snap.models.values():
        assert (counters.success_count, counters.failure_count, counters.execution_count) == (0, 0, 0)
        # Triton prints `Nan` quantiles before any traffic; they must come out as None, not NaN.
        assert counters.request_p50_us is None and counters.request_p99_us is None
        assert counters.queue_p50_us is None and counters.queue_p99_us is None
    assert snap.gpus == {}  # captured without a GPU
    assert snap.cpu is not None and snap.cpu.memory_total_bytes is not None


def test_batched_scrape_counts_every_request_sent_and_fewer_executions() -> None:
    adder = golden("batched").models[ADDER]
    assert adder.success_count == SENT_OK
    assert adder.inference_count == SENT_OK
    assert adder.failure_count == 0
    assert 0 < adder.execution_count < SENT_OK  # dynamic batching merged concurrent requests
    assert adder.request_duration_us >= adder.queue_duration_us > 0
    assert adder.request_p50_us is not None and adder.request_p99_us is not None
    assert 0 < adder.request_p50_us <= adder.request_p99_us
    assert adder.queue_p50_us is not None and adder.queue_p99_us is not None


def test_failures_scrape_sums_failure_reasons() -> None:
    snap = golden("failures")
    failing = snap.models[FAILING]
    assert failing.failure_count == SENT_FAILING
    assert failing.success_count == 0 and failing.inference_count == 0
    # The earlier traffic to the healthy model is still there, unchanged.
    assert snap.models[ADDER] == golden("batched").models[ADDER]


def test_gpu_and_cpu_series_are_read_per_gpu_uuid() -> None:
    # The capture machine has no GPU: these lines use the names and the `gpu_uuid` label that
    # libtritonserver declares, appended to a real scrape.
    text = (GOLDEN / "idle.prom").read_text() + (
        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n"
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-aaaa"} 0.25\n'
        'nv_gpu_utilization{gpu_uuid="GPU-bbbb"} Nan\n'
        "# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes\n"
        "# TYPE nv_gpu_memory_total_bytes gauge\n"
        'nv_gpu_memory_total_bytes{gpu_uuid="GPU-aaaa"} 85899345920\n'
        "# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes\n"
        "# TYPE nv_gpu_memory_used_bytes gauge\n"
        'nv_gpu_memory_used_bytes{gpu_uuid="GPU-aaaa"} 1073741824\n'
    )
    gpus = parse_metrics(text).gpus
    assert set(gpus) == {"GPU-aaaa", "GPU-bbbb"}
    assert gpus["GPU-aaaa"].utilization == 0.25
    assert gpus["GPU-aaaa"].memory_used_bytes == 1073741824
    assert gpus["GPU-aaaa"].memory_total_bytes == 85899345920
    assert gpus["GPU-bbbb"].utilization is None and gpus["GPU-bbbb"].memory_total_bytes is None


def test_empty_text_is_an_empty_snapshot() -> None:
    assert parse_metrics("") == MetricsSnapshot()


# --- rates between real scrapes -------------------------------------------------------------------


def test_rates_between_real_scrapes_match_the_traffic_sent() -> None:
    elapsed = CAPTURE["batched_elapsed_s"]
    adder = rates(golden("idle"), golden("batched"), elapsed)[ADDER]
    assert adder.success_count == SENT_OK and adder.failure_count == 0
    assert adder.request_rate == pytest.approx(SENT_OK / elapsed)
    assert adder.failure_rate == 0 and adder.failure_ratio == 0
    assert adder.batching_efficiency is not None and adder.batching_efficiency > 1
    assert adder.avg_latency_us is not None and adder.avg_queue_us is not None
    assert 0 < adder.avg_queue_us <= adder.avg_latency_us
    assert adder.p99_latency_us == golden("batched").models[ADDER].request_p99_us


def test_rates_between_real_scrapes_show_failures_and_an_idle_model() -> None:
    by_model = rates(golden("batched"), golden("failures"), 2.0)
    failing, adder = by_model[FAILING], by_model[ADDER]
    assert failing.failure_count == SENT_FAILING
    assert failing.failure_rate == pytest.approx(SENT_FAILING / 2.0)
    assert failing.failure_ratio == 1.0
    assert failing.avg_latency_us is None  # Triton accumulates durations of successes only
    assert (adder.request_rate, adder.avg_latency_us, adder.batching_efficiency) == (0, None, None)
    assert adder.p99_latency_us is None  # no request in this window: no stale quantile


# --- rates, table-driven --------------------------------------------------------------------------


def counters(
    ok: int = 0,
    failed: int = 0,
    inferences: int = 0,
    executions: int = 0,
    duration: int = 0,
    queue: int = 0,
    p50: float | None = None,
    p99: float | None = None,
) -> ModelCounters:
    return ModelCounters(
        model="m", version="1", success_count=ok, failure_count=failed, inference_count=inferences,
        execution_count=executions, request_duration_us=duration, queue_duration_us=queue,
        request_p50_us=p50, request_p99_us=p99, queue_p50_us=p50, queue_p99_us=p99,
    )  # fmt: skip


RATE_CASES = [
    # previous, current, elapsed, (rate, failure rate, ok, failed, avg latency, avg queue, efficiency)
    pytest.param(
        counters(100, 2, 100, 50, 10_000, 1_000),
        counters(300, 12, 300, 75, 50_000, 5_000, 80.0, 900.0),
        10.0,
        (21.0, 1.0, 200, 10, 200.0, 20.0, 8.0),
        id="steady traffic with batching",
    ),
    pytest.param(
        counters(300, 12, 300, 75, 50_000, 5_000),
        counters(300, 12, 300, 75, 50_000, 5_000, 80.0, 900.0),
        10.0,
        (0.0, 0.0, 0, 0, None, None, None),
        id="zero traffic",
    ),
    pytest.param(
        counters(300, 12, 300, 75, 50_000, 5_000),
        counters(40, 0, 40, 20, 4_000, 400, 90.0, 150.0),
        10.0,
        (4.0, 0.0, 40, 0, 100.0, 10.0, 2.0),
        id="counter reset after a pod restart",
    ),
    pytest.param(
        counters(300, 12, 300, 75, 50_000, 5_000),
        counters(310, 0, 310, 80, 51_000, 5_100, 90.0, 150.0),
        5.0,
        (62.0, 0.0, 310, 0, 51_000 / 310, 5_100 / 310, 310 / 80),
        id="one counter lower means a reset",
    ),
    pytest.param(
        None,
        counters(30, 0, 30, 30, 3_000, 300, 100.0, 100.0),
        3.0,
        (10.0, 0.0, 30, 0, 100.0, 10.0, 1.0),
        id="model loaded since the last scrape",
    ),
    pytest.param(
        counters(10, 0, 10, 10, 1_000, 100),
        counters(10, 8, 10, 12, 1_000, 100),
        4.0,
        (2.0, 2.0, 0, 8, None, None, 0.0),
        id="only failures",
    ),
]


@pytest.mark.parametrize(("previous", "current", "elapsed", "expected"), RATE_CASES)
def test_model_rates(
    previous: ModelCounters | None,
    current: ModelCounters,
    elapsed: float,
    expected: tuple[float, float, int, int, float | None, float | None, float | None],
) -> None:
    got = model_rates(previous, current, elapsed)
    rate, failure_rate, ok, failed, latency, queue, efficiency = expected
    assert got.request_rate == pytest.approx(rate)
    assert got.failure_rate == pytest.approx(failure_rate)
    assert (got.success_count, got.failure_count) == (ok, failed)
    assert got.avg_latency_us == (pytest.approx(latency) if latency is not None else None)
    assert got.avg_queue_us == (pytest.approx(queue) if queue is not None else None)
    assert got.batching_efficiency == (pytest.approx(efficiency) if efficiency is not None else None)
    assert got.request_rate >= 0 and got.failure_rate >= 0 and got.success_count >= 0
    if ok:  # quantiles come from the current scrape when the window saw successful requests
        assert (got.p50_latency_us, got.p99_latency_us) == (current.request_p50_us, current.request_p99_us)
    else:
        assert (got.p50_latency_us, got.p99_latency_us) == (None, None)


@pytest.mark.parametrize("elapsed", [0.0, -1.0, math.nan, math.inf])
def test_rates_reject_a_window_that_is_not_positive(elapsed: float) -> None:
    with pytest.raises(ValueError, match="elapsed_s"):
        model_rates(None, counters(1, 0, 1, 1, 10, 1), elapsed)


def test_rates_drop_models_gone_from_the_current_scrape() -> None:
    before = MetricsSnapshot(models={("m", "1"): counters(5), ("old", "1"): counters(5)})
    after = MetricsSnapshot(models={("m", "1"): counters(9)})
    assert set(rates(before, after, 1.0)) == {("m", "1")}


# --- aggregation across pods ----------------------------------------------------------------------


def pod(rate: float, ok: int, duration: int, p99: float | None, window: float = 10.0) -> ModelRates:
    return ModelRates(
        model="m", version="1", window_s=window, request_rate=rate, failure_rate=rate / 10,
        success_count=ok, failure_count=ok // 10, inference_count=ok, execution_count=max(ok // 4, 1),
        request_duration_us=duration, queue_duration_us=duration // 10, p50_latency_us=p99 and p99 / 2,
        p99_latency_us=p99, p50_queue_us=None, p99_queue_us=None,
    )  # fmt: skip


def test_aggregate_sums_rates_and_weights_averages_by_requests() -> None:
    busy, quiet = pod(10.0, 100, 100 * 1_000, 3_000.0), pod(1.0, 10, 10 * 10_000, 50_000.0, window=12.0)
    total = aggregate([busy, quiet])
    assert total.request_rate == pytest.approx(11.0)
    assert total.failure_rate == pytest.approx(1.1)
    assert (total.success_count, total.failure_count) == (110, 11)
    # Request-weighted: (100 * 1 ms + 10 * 10 ms) / 110, not the mean of the two pods' averages.
    assert total.avg_latency_us == pytest.approx(200_000 / 110)
    assert total.batching_efficiency == pytest.approx(110 / 27)
    # The slow pod's p99 shows: a mean would report 26.5 ms, hiding a pod that is at 50 ms.
    assert total.p99_latency_us == 50_000.0
    assert total.p50_latency_us == 25_000.0
    assert total.window_s == 12.0


def test_aggregate_ignores_pods_without_quantiles() -> None:
    assert aggregate([pod(1.0, 10, 100, None), pod(2.0, 20, 200, 7.0)]).p99_latency_us == 7.0
    assert aggregate([pod(0.0, 0, 0, None)]).p99_latency_us is None


def test_aggregate_refuses_mixed_models_and_empty_input() -> None:
    other = ModelRates(
        model="other", version="1", window_s=1.0, request_rate=0.0, failure_rate=0.0, success_count=0,
        failure_count=0, inference_count=0, execution_count=0, request_duration_us=0, queue_duration_us=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="one model version"):
        aggregate([pod(1.0, 10, 100, None), other])
    with pytest.raises(ValueError, match="at least one pod"):
        aggregate([])


# --- regressions found by tests/unit/test_fuzz_parsers.py (issue 12: hostile input) --------------

SERIES = 'nv_inference_request_success{model="m",version="1"}'


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "1e400", "-5", "1.8446744073709552e19"])
def test_a_counter_that_is_not_a_count_is_ignored_not_a_crash(value: str) -> None:
    # int(NaN) raised ValueError, int(Inf) OverflowError; -5 made rates negative.
    counters = parse_metrics(f"{SERIES} {value}\n{SERIES.replace('success', 'failure')} 3\n").models[
        ("m", "1")
    ]
    assert (counters.success_count, counters.failure_count) == (0, 3)


def test_counters_at_the_float_limit_do_not_overflow_the_rates() -> None:
    # Two counters of 1e308 each made an int of 2e308 that float division refused (OverflowError).
    text = f"{SERIES} 1e308\n{SERIES.replace('success', 'failure')} 1e308\n"
    window = rates(MetricsSnapshot(), parse_metrics(text), 1.0)[("m", "1")]
    assert window.request_rate == 0.0


def test_an_infinite_or_negative_quantile_is_dropped() -> None:
    # status.metrics is JSON: Infinity there is refused by the API server.
    text = (
        'nv_inference_request_summary_us{model="m",version="1",quantile="0.99"} +Inf\n'
        'nv_inference_request_summary_us{model="m",version="1",quantile="0.5"} -3\n'
        'nv_gpu_utilization{gpu_uuid="GPU-a"} 1e400\n'
    )
    snapshot = parse_metrics(text)
    assert snapshot.models[("m", "1")].request_p99_us is None
    assert snapshot.models[("m", "1")].request_p50_us is None
    assert snapshot.gpus["GPU-a"].utilization is None


def test_router_counts_that_are_not_counts_are_ignored() -> None:
    text = (
        'tritonoperator_router_requests_total{router="r",model="m",version="1",outcome="success"} NaN\n'
        'tritonoperator_router_requests_total{router="r",model="m",version="1",outcome="failure"} 2\n'
    )
    assert parse_metrics(text).routed[("r", "m", "1")] == RoutedCounts(success=0, failure=2)


@pytest.mark.parametrize("text", ["<html><body>502 Bad Gateway</body></html>\n", 'a{b="c"\n', "x" * 100_000])
def test_metrics_text_that_is_not_prometheus_text_is_a_short_triton_error(text: str) -> None:
    # The parser's ValueError escaped the reconcile, which handles TritonError (a pod it cannot read).
    with pytest.raises(TritonError, match="not Prometheus text") as caught:
        parse_metrics(text)
    assert len(caught.value.message) < 300


def test_a_metrics_answer_larger_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Huge:
        def __enter__(self) -> Huge:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def read(self, size: int = -1) -> bytes:
            assert size == METRICS_LIMIT + 1, "read the whole body into memory"
            return b"#" * size

    monkeypatch.setattr("triton_operator.triton.metrics._open", lambda *_, **__: Huge())
    with pytest.raises(TritonError, match="larger than"):
        fetch_metrics(TritonEndpoint("10.0.0.1"))
