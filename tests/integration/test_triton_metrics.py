"""Triton's own metrics before and after real traffic: exact counts, rates, batching, failures."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from triton_operator.triton.client import TritonEndpoint, load_model
from triton_operator.triton.metrics import ModelRates, aggregate, fetch_metrics, parse_metrics, rates

from sandbox.tritonserver import run_tritonserver
from tests.golden.triton.triton_models import FAILING_PY, send_concurrent, write_model

pytestmark = pytest.mark.integration

PODS = ("127.30.0.12", "127.30.0.13")  # two "replicas" of one pool


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TritonEndpoint]]:
    repo = tmp_path_factory.mktemp("triton-metrics") / "repo"
    write_model(repo, "adder", max_queue_delay_us=20000)
    write_model(repo, "failing", FAILING_PY)
    with (
        run_tritonserver(repo, PODS[0], extra_args=["--metrics-config=summary_latencies=true"]),
        run_tritonserver(repo, PODS[1], extra_args=["--metrics-config=summary_latencies=true"]),
    ):
        endpoints = [TritonEndpoint(address) for address in PODS]
        for ep in endpoints:
            load_model(ep, "adder")
            load_model(ep, "failing")
        yield endpoints


def traffic(ep: TritonEndpoint, model: str, requests: int, concurrency: int) -> tuple[ModelRates, int]:
    """Scrape, send, scrape; the model's rates over that window and how many requests succeeded."""
    before, started = parse_metrics(fetch_metrics(ep)), time.monotonic()
    results = send_concurrent(ep.http_url, model, requests, concurrency)
    after, elapsed = parse_metrics(fetch_metrics(ep)), time.monotonic() - started
    return rates(before, after, elapsed)[(model, "1")], results.count(None)


def test_counts_and_rate_match_the_requests_sent_and_batching_shows(pods: list[TritonEndpoint]) -> None:
    sent = 40
    window, succeeded = traffic(pods[0], "adder", sent, concurrency=8)
    assert succeeded == sent
    assert (window.success_count, window.failure_count, window.inference_count) == (sent, 0, sent)
    assert window.request_rate == pytest.approx(sent / window.window_s)
    # Eight clients at once against a 20 ms batching window: executions carry several requests.
    assert window.batching_efficiency is not None and window.batching_efficiency > 1
    assert window.avg_latency_us is not None and window.avg_queue_us is not None
    assert 0 < window.avg_queue_us < window.avg_latency_us
    assert window.p50_latency_us is not None and window.p99_latency_us is not None
    assert window.p50_latency_us <= window.p99_latency_us


def test_sequential_requests_are_not_batched(pods: list[TritonEndpoint]) -> None:
    window, succeeded = traffic(pods[1], "adder", 5, concurrency=1)
    assert succeeded == 5 == window.success_count
    assert window.batching_efficiency == 1.0


def test_a_model_that_raises_counts_failures(pods: list[TritonEndpoint]) -> None:
    window, succeeded = traffic(pods[0], "failing", 7, concurrency=4)
    assert succeeded == 0
    assert (window.success_count, window.failure_count) == (0, 7)
    assert window.failure_rate == pytest.approx(7 / window.window_s)
    assert window.failure_ratio == 1.0
    assert window.avg_latency_us is None


def test_pool_view_adds_up_both_pods(pods: list[TritonEndpoint]) -> None:
    windows = [traffic(ep, "adder", n, concurrency=4)[0] for ep, n in zip(pods, (12, 4), strict=True)]
    pool = aggregate(windows)
    assert pool.success_count == 16
    assert pool.request_rate == pytest.approx(sum(w.request_rate for w in windows))
    assert pool.p99_latency_us == max(w.p99_latency_us for w in windows if w.p99_latency_us is not None)
