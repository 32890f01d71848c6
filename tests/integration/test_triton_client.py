"""The Triton client facade against a real tritonserver (python backend) on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from triton_operator.triton.client import (
    CONNECT_TIMEOUT_S,
    ModelState,
    TritonEndpoint,
    TritonLoadError,
    TritonTimeout,
    TritonUnreachable,
    load_model,
    model_ready,
    repository_index,
    server_health,
    unload_model,
)
from triton_operator.triton.metrics import fetch_metrics

from tests.golden.triton.triton_models import write_model
from tests.support.tritonserver import run_tritonserver, wait_http_ok

pytestmark = pytest.mark.integration

SERVER = "127.30.0.10"
STRICT_SERVER = "127.30.0.11"
DEAD = "127.30.0.49"  # nothing listens here
HUNG = "127.30.0.48"  # accepts connections, never answers


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonEndpoint]:
    repo = tmp_path_factory.mktemp("triton-client") / "repo"
    write_model(repo, "adder")
    write_model(repo, "short_lived")
    write_model(repo, "broken", backend="nosuchbackend")
    write_model(repo, "overridden", backend="nosuchbackend")
    # Triton's default is strict readiness: one failed model makes the whole server not ready.
    # Relaxed here so this server stays ready after the broken-model test; strict is tested below.
    args = ["--metrics-config=summary_latencies=true", "--strict-readiness=false"]
    with run_tritonserver(repo, SERVER, extra_args=args):
        yield TritonEndpoint(SERVER)


def index_row(ep: TritonEndpoint, name: str) -> ModelState:
    rows = [m for m in repository_index(ep) if m.name == name]
    assert len(rows) == 1, rows
    return rows[0]


def test_health_of_a_ready_server(endpoint: TritonEndpoint) -> None:
    health = server_health(endpoint)
    assert (health.live, health.ready, health.error) == (True, True, None)
    assert health.version is not None and health.version.count(".") == 2


def test_calls_from_worker_threads(endpoint: TritonEndpoint) -> None:
    # kopf runs sync handlers in a thread pool; tritonclient's gevent client must work there too.
    with ThreadPoolExecutor(max_workers=4) as pool:
        healths = list(pool.map(lambda _: server_health(endpoint), range(8)))
    assert all(h.ready for h in healths)


def test_load_model_makes_it_ready_in_the_index(endpoint: TritonEndpoint) -> None:
    assert index_row(endpoint, "adder").state is None  # on disk, never loaded
    load_model(endpoint, "adder")
    assert index_row(endpoint, "adder") == ModelState("adder", "1", "READY", None)
    assert model_ready(endpoint, "adder")
    assert model_ready(endpoint, "adder", 1)
    assert not model_ready(endpoint, "adder", 2)
    assert not model_ready(endpoint, "no_such_model")


def test_config_json_overrides_the_config_on_disk(endpoint: TritonEndpoint) -> None:
    # On disk this model names a backend that does not exist; the override names the real one.
    config = {
        "name": "overridden",
        "backend": "python",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [1]}],
    }
    load_model(endpoint, "overridden", config_json=json.dumps(config))
    assert index_row(endpoint, "overridden").state == "READY"


def test_broken_config_raises_tritons_reason_and_shows_unavailable(endpoint: TritonEndpoint) -> None:
    with pytest.raises(TritonLoadError) as caught:
        load_model(endpoint, "broken")
    row = index_row(endpoint, "broken")
    assert row.state == "UNAVAILABLE"
    assert row.reason is not None and "nosuchbackend" in row.reason
    # The exception carries Triton's own words: the same reason its index gives.
    assert row.reason in caught.value.message
    assert "broken" in caught.value.message
    assert server_health(endpoint).ready  # without strict readiness one failed model does not matter


def test_unload_is_idempotent_and_takes_the_model_down(endpoint: TritonEndpoint) -> None:
    unload_model(endpoint, "no_such_model")
    load_model(endpoint, "short_lived")
    assert model_ready(endpoint, "short_lived")
    unload_model(endpoint, "short_lived")
    deadline = time.monotonic() + 20
    while model_ready(endpoint, "short_lived") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not model_ready(endpoint, "short_lived")
    unload_model(endpoint, "short_lived")  # again: still fine


def test_strict_readiness_reports_the_model_that_failed_at_startup(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "adder")
    write_model(repo, "broken", backend="nosuchbackend")
    args = ["--strict-readiness=true", "--load-model=adder", "--load-model=broken", "--exit-on-error=false"]
    with run_tritonserver(repo, STRICT_SERVER, extra_args=args, wait_ready=False) as server:
        assert wait_http_ok(f"http://{server.http_url}/v2/health/live", 60, server.process), server.log()
        health = server_health(TritonEndpoint(STRICT_SERVER))
    assert (health.live, health.ready) == (True, False)
    assert health.error is not None
    assert "model 'broken'" in health.error and "nosuchbackend" in health.error
    assert "adder" not in health.error


@pytest.mark.parametrize(
    "call",
    [server_health, repository_index, fetch_metrics, lambda ep: load_model(ep, "adder")],
    ids=["server_health", "repository_index", "fetch_metrics", "load_model"],
)
def test_a_dead_address_is_unreachable_fast(call: Callable[[TritonEndpoint], object]) -> None:
    started = time.monotonic()
    with pytest.raises(TritonUnreachable):
        call(TritonEndpoint(DEAD))
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1


@pytest.fixture
def hung_pod() -> Iterator[TritonEndpoint]:
    """Sockets that complete the TCP handshake (kernel backlog) but never answer, like a hung pod."""
    sockets = []
    for port in (8000, 8002):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HUNG, port))
        sock.listen(8)
        sockets.append(sock)
    try:
        yield TritonEndpoint(HUNG)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda ep: server_health(ep, timeout_s=1.0),
        lambda ep: load_model(ep, "adder", timeout_s=1.0),
        lambda ep: fetch_metrics(ep, timeout_s=1.0),
    ],
    ids=["server_health", "load_model", "fetch_metrics"],
)
def test_a_hung_pod_times_out_within_the_timeout(
    hung_pod: TritonEndpoint, call: Callable[[TritonEndpoint], object]
) -> None:
    started = time.monotonic()
    with pytest.raises(TritonTimeout):
        call(hung_pod)
    assert time.monotonic() - started < 3.0
