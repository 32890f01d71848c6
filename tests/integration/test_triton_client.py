"""The Triton client facade against a real tritonserver (python backend) on loopback.

The facade talks gRPC (port 8001); the tests send inferences over HTTP to check what was loaded.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from triton_operator.triton.client import (
    CONNECT_TIMEOUT_S,
    ModelState,
    TritonEndpoint,
    TritonError,
    TritonLoadError,
    TritonTimeout,
    TritonUnreachable,
    load_model,
    model_config,
    model_ready,
    repository_index,
    server_health,
    unload_model,
)
from triton_operator.triton.metrics import fetch_metrics

from sandbox.tritonserver import run_tritonserver, wait_http_ok
from tests.golden.triton.triton_models import ADDER_PY, write_model

pytestmark = pytest.mark.integration

SERVER = "127.30.0.10"
STRICT_SERVER = "127.30.0.11"
DEAD = "127.30.0.49"  # nothing listens here
HUNG = "127.30.0.48"  # accepts connections, never answers

# Adds two instead of one: tells a model loaded from `files=` apart from the adder on disk.
ADD_TWO_PY = ADDER_PY.replace("x + 1", "x + 2")
assert ADD_TWO_PY != ADDER_PY

PYTHON_CONFIG = {
    "backend": "python",
    "max_batch_size": 4,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [1]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [1]}],
}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonEndpoint]:
    repo = tmp_path_factory.mktemp("triton-client") / "repo"
    write_model(repo, "adder")
    write_model(repo, "short_lived")
    write_model(repo, "broken", backend="nosuchbackend")
    write_model(repo, "overridden", backend="nosuchbackend")
    write_model(repo, "files_on_disk")  # the adder; a load replaces its model.py
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


def infer(ep: TritonEndpoint, model: str, value: float = 1.0) -> float:
    """One HTTP inference of one FP32 value; returns OUTPUT0."""
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.full((1, 1), value, dtype=np.float32))
    with triton_http.InferenceServerClient(ep.http_url, connection_timeout=5.0, network_timeout=30.0) as c:
        out = c.infer(model, [inp]).as_numpy("OUTPUT0")
    assert out is not None
    return float(out[0][0])


def test_calls_from_worker_threads(endpoint: TritonEndpoint) -> None:
    # kopf runs sync handlers in a thread pool; the gRPC client must work there too.
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
    assert model_config(endpoint, "overridden")["max_batch_size"] == 4


def test_model_config_returns_the_config_triton_serves(endpoint: TritonEndpoint) -> None:
    load_model(endpoint, "adder")
    config = model_config(endpoint, "adder")
    assert (config["name"], config["backend"], config["max_batch_size"]) == ("adder", "python", 16)
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("INPUT0", "TYPE_FP32", ["1"])
    ]
    # Triton fills in what config.pbtxt left out; int64 fields come as strings (protobuf JSON).
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "20000"
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert model_config(endpoint, "adder", 1) == config
    with pytest.raises(TritonError, match="no_such_model"):
        model_config(endpoint, "no_such_model")
    with pytest.raises(TritonError):
        model_config(endpoint, "adder", 2)


def test_files_override_the_model_folder(endpoint: TritonEndpoint) -> None:
    # On disk this model adds one; the load call brings a model.py that adds two, and its config.
    config = {"name": "files_on_disk", **PYTHON_CONFIG}
    files = {"file:1/model.py": ADD_TWO_PY.encode()}
    load_model(endpoint, "files_on_disk", config_json=json.dumps(config), files=files)
    assert model_ready(endpoint, "files_on_disk", 1)
    assert infer(endpoint, "files_on_disk", 1.0) == 3.0
    assert model_config(endpoint, "files_on_disk")["max_batch_size"] == 4
    assert index_row(endpoint, "files_on_disk").state == "READY"
    # A plain reload goes back to the folder on disk.
    load_model(endpoint, "files_on_disk")
    assert infer(endpoint, "files_on_disk", 1.0) == 2.0
    assert model_config(endpoint, "files_on_disk")["max_batch_size"] == 16


def test_files_load_a_model_that_is_not_in_the_repository(endpoint: TritonEndpoint) -> None:
    config = {"name": "files_only", **PYTHON_CONFIG}
    load_model(
        endpoint, "files_only", config_json=json.dumps(config), files={"file:1/model.py": ADD_TWO_PY.encode()}
    )
    assert model_ready(endpoint, "files_only")
    assert infer(endpoint, "files_only", 5.0) == 7.0
    assert model_config(endpoint, "files_only")["name"] == "files_only"
    # Triton's index lists the repository's folders only: a model loaded from files is not in it.
    assert "files_only" not in [m.name for m in repository_index(endpoint)]
    unload_model(endpoint, "files_only")


def test_broken_files_raise_tritons_reason_and_keep_the_served_version(endpoint: TritonEndpoint) -> None:
    load_model(endpoint, "adder")
    config = {"name": "adder", **PYTHON_CONFIG}
    with pytest.raises(TritonLoadError, match="SyntaxError") as caught:
        load_model(endpoint, "adder", config_json=json.dumps(config), files={"file:1/model.py": b"def ("})
    assert "adder" in caught.value.message
    # A failed reload leaves the loaded version serving.
    assert model_ready(endpoint, "adder")
    assert infer(endpoint, "adder", 1.0) == 2.0


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
    with pytest.raises(TritonError):
        model_config(endpoint, "short_lived")  # not served any more


def test_short_lived_clients_leak_no_threads_or_descriptors(endpoint: TritonEndpoint) -> None:
    dead = TritonEndpoint(DEAD)
    load_model(endpoint, "adder")

    def round_of_calls() -> None:
        for _ in range(20):
            assert model_ready(endpoint, "adder")
            server_health(endpoint)
            with pytest.raises(TritonUnreachable):
                repository_index(dead)

    def counts() -> tuple[int, int]:
        return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))

    round_of_calls()  # gRPC starts its own few threads once
    threads, fds = counts()
    for _ in range(5):
        round_of_calls()
    # 300 clients later: a leak of one thread or socket per client would show in the hundreds.
    threads_after, fds_after = counts()
    assert threads_after <= threads + 8, (threads, threads_after)
    assert fds_after <= fds + 8, (fds, fds_after)


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
    [
        server_health,
        repository_index,
        fetch_metrics,
        lambda ep: load_model(ep, "adder"),
        lambda ep: unload_model(ep, "adder"),
        lambda ep: model_ready(ep, "adder"),
        lambda ep: model_config(ep, "adder"),
    ],
    ids=[
        "server_health",
        "repository_index",
        "fetch_metrics",
        "load_model",
        "unload_model",
        "model_ready",
        "model_config",
    ],
)
def test_a_dead_address_is_unreachable_fast(call: Callable[[TritonEndpoint], object]) -> None:
    started = time.monotonic()
    with pytest.raises(TritonUnreachable) as caught:
        call(TritonEndpoint(DEAD))
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
    assert not isinstance(caught.value, TritonTimeout)  # refused, not slow


@pytest.fixture
def hung_pod() -> Iterator[TritonEndpoint]:
    """Sockets that complete the TCP handshake (kernel backlog) but never answer, like a hung pod."""
    sockets = []
    for port in (8000, 8001, 8002):
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
        lambda ep: repository_index(ep, timeout_s=1.0),
        lambda ep: model_ready(ep, "adder", timeout_s=1.0),
        lambda ep: unload_model(ep, "adder", timeout_s=1.0),
        lambda ep: model_config(ep, "adder", timeout_s=1.0),
    ],
    ids=[
        "server_health",
        "load_model",
        "fetch_metrics",
        "repository_index",
        "model_ready",
        "unload_model",
        "model_config",
    ],
)
def test_a_hung_pod_times_out_within_the_timeout(
    hung_pod: TritonEndpoint, call: Callable[[TritonEndpoint], object]
) -> None:
    started = time.monotonic()
    with pytest.raises(TritonTimeout):
        call(hung_pod)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    "call",
    [server_health, lambda ep: load_model(ep, "adder")],
    ids=["server_health", "load_model"],
)
def test_a_hung_pod_times_out_after_the_connect_timeout(
    hung_pod: TritonEndpoint, call: Callable[[TritonEndpoint], object]
) -> None:
    # Its kernel accepts the TCP connection but the process never completes gRPC's handshake, so
    # even a load (60 s timeout) gives up once the connection attempt exceeds CONNECT_TIMEOUT_S.
    started = time.monotonic()
    with pytest.raises(TritonTimeout, match="did not complete a connection"):
        call(hung_pod)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
