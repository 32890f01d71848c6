"""Loading a model must not stall the inferences a server is already serving.

Triton 2.51 stalls every in-flight HTTP inference, for any model, while a load over its HTTP API runs
(Triton issue 8958); a load over gRPC stalls nothing. So `load_model` talks gRPC. This test keeps one
client sending HTTP inferences to a loaded model while `load_model` loads another model whose
`initialize` sleeps, and checks that no inference waited for the load. With loads over HTTP, one
inference takes as long as the whole load (about 3 s here) and the test fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.http as triton_http
from triton_operator.triton.client import TritonEndpoint, load_model, model_ready

from sandbox.tritonserver import run_tritonserver
from tests.golden.triton.triton_models import write_model
from tests.support.models import INIT_SLEEP_S, SLOW_INIT_PY

pytestmark = pytest.mark.integration

SERVER = "127.30.0.20"
MAX_REQUESTS = 3000  # the inference loop's bounds
MAX_SECONDS = 15.0
PACE_S = 0.005  # pause between two inferences: about 150 per second
BASELINE_REQUESTS = 100  # inferences before the load, for the baseline p99
STALL_FLOOR_S = 0.25


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonEndpoint]:
    repo = tmp_path_factory.mktemp("triton-load-stall") / "repo"
    write_model(repo, "serving", max_queue_delay_us=0)  # no batching delay: latency is the server's
    write_model(repo, "slow_init", SLOW_INIT_PY)
    with run_tritonserver(repo, SERVER, extra_args=["--strict-readiness=false"]):
        ep = TritonEndpoint(SERVER)
        load_model(ep, "serving")
        yield ep


@dataclass(frozen=True)
class Sample:
    started: float
    ended: float
    error: str | None

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


def infer_loop(ep: TritonEndpoint, model: str, stop: threading.Event, samples: list[Sample]) -> None:
    """HTTP inferences on one kept-alive connection until `stop`, MAX_REQUESTS or MAX_SECONDS."""
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    deadline = time.monotonic() + MAX_SECONDS
    with triton_http.InferenceServerClient(ep.http_url, connection_timeout=5.0, network_timeout=20.0) as c:
        for _ in range(MAX_REQUESTS):
            if stop.is_set() or time.monotonic() > deadline:
                return
            started = time.monotonic()
            error: str | None = None
            try:
                out = c.infer(model, [inp]).as_numpy("OUTPUT0")
                if out is None or float(out[0][0]) != 2.0:
                    error = f"unexpected output {out!r}"
            except Exception as exc:  # every failure counts; the assertion shows them
                error = f"{type(exc).__name__}: {exc}"
            samples.append(Sample(started, time.monotonic(), error))
            time.sleep(PACE_S)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def test_a_load_does_not_stall_inferences_in_flight(endpoint: TritonEndpoint) -> None:
    stop = threading.Event()
    samples: list[Sample] = []
    sender = threading.Thread(target=infer_loop, args=(endpoint, "serving", stop, samples), daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 5.0
        while len(samples) < BASELINE_REQUESTS and time.monotonic() < deadline and sender.is_alive():
            time.sleep(0.05)
        assert len(samples) >= BASELINE_REQUESTS, samples[-3:]
        load_started = time.monotonic()
        load_model(endpoint, "slow_init", timeout_s=30.0)
        load_ended = time.monotonic()
        time.sleep(0.3)  # inferences right after the load count too
    finally:
        stop.set()
        sender.join(timeout=30.0)
    assert not sender.is_alive()
    assert model_ready(endpoint, "slow_init")
    load_s = load_ended - load_started
    assert load_s >= INIT_SLEEP_S, f"the load took {load_s:.2f} s: initialize() did not run?"

    baseline = [s.latency_s for s in samples if s.ended <= load_started]
    during = [s for s in samples if s.started < load_ended and s.ended > load_started]
    limit = max(5 * p99(baseline), STALL_FLOOR_S)
    worst = max(s.latency_s for s in during) if during else 0.0
    summary = (
        f"load {load_s:.2f} s; {len(baseline)} inferences before it, p99 {p99(baseline) * 1000:.1f} ms; "
        f"{len(during)} during it, worst {worst * 1000:.1f} ms (limit {limit * 1000:.0f} ms)"
    )
    print(summary)
    assert [s.error for s in samples if s.error] == []
    assert worst < limit, summary
    # The sender kept going during the load (a stalled one manages a handful at most).
    assert len(during) >= 50, summary
