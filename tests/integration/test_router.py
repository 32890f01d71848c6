"""The router on the real tritonserver: loaded by the load API alone, exact splits, sticky, pins, reloads.

One versioned python model (versions 1 and 2 in one folder, each adding its version to the input) and
a twin with the same signature under another name. The router never has a folder in the repository:
it is loaded by gRPC `load_model(name, config=..., files=...)`. Headers reach the router's
`request.parameters()` through `--http-header-forward-pattern` / `--grpc-header-forward-pattern`.
Every test runs with both routers: the native one (C++) and the python one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from triton_operator.render.router import (
    ROUTER_ENV,
    Variant,
    native_router,
    router_config,
    router_files,
    router_matches,
    router_variants,
    signature_mismatch,
)
from triton_operator.triton import client as triton
from triton_operator.triton.client import TritonEndpoint
from triton_operator.triton.metrics import fetch_metrics, parse_metrics
from tritonclient.utils import InferenceServerException

from sandbox.tritonserver import RunningTriton, run_tritonserver
from tests.support.models import write_versioned
from tests.support.router_backend import ensure_router_binaries

pytestmark = pytest.mark.integration

SERVER = "127.31.0.1"
FORWARD = ["--http-header-forward-pattern=^x-", "--grpc-header-forward-pattern=^x-"]
PUBLIC = "ranker"
STICKY, PIN = "x-user-id", "x-triton-variant"

TWIN_OFFSET = 100


@pytest.fixture(scope="module", params=["native", "python"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTriton]:
    """The server, with every test run once with each router: the native one (C++, what the operator
    loads where it is built) and the python one (TRITON_OPERATOR_ROUTER=python)."""
    if request.param == "native":
        ensure_router_binaries()
    saved = os.environ.get(ROUTER_ENV)
    os.environ[ROUTER_ENV] = request.param
    repo = tmp_path_factory.mktemp("router") / "repo"
    write_versioned(repo, "scorer", [1, 2])
    write_versioned(repo, "scorer_twin", [1], offset=TWIN_OFFSET)
    try:
        with run_tritonserver(repo, SERVER, extra_args=FORWARD) as running:
            with triton_grpc.InferenceServerClient(running.grpc_url) as client:
                client.load_model("scorer")
                client.load_model("scorer_twin")
            assert native_router() == (request.param == "native")
            yield running
    finally:
        if saved is None:
            os.environ.pop(ROUTER_ENV, None)
        else:
            os.environ[ROUTER_ENV] = saved


def target_config(server: RunningTriton, name: str = "scorer") -> dict[str, Any]:
    with triton_http.InferenceServerClient(server.http_url) as client:
        config: dict[str, Any] = client.get_model_config(name)
        return config


def load_router(server: RunningTriton, variants: list[Variant], name: str = PUBLIC) -> float:
    """Load (or reload) the router over gRPC (an HTTP load stalls HTTP inference); seconds it took."""
    config = router_config(name, target_config(server), variants, sticky_key=STICKY, pin_key=PIN)
    started = time.monotonic()
    with triton_grpc.InferenceServerClient(server.grpc_url) as client:
        client.load_model(name, config=json.dumps(config), files=router_files())
    return time.monotonic() - started


class Clients(threading.local):
    """One HTTP and one gRPC client per thread; infer returns the output value or the error message."""

    def __init__(self, server: RunningTriton) -> None:
        self.http = triton_http.InferenceServerClient(server.http_url, network_timeout=30.0)
        self.grpc = triton_grpc.InferenceServerClient(server.grpc_url)

    def infer(
        self,
        protocol: str,
        *,
        value: float = 1.0,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        model: str = PUBLIC,
    ) -> float | str:
        module: Any = triton_http if protocol == "http" else triton_grpc
        client: Any = self.http if protocol == "http" else self.grpc
        tensor = module.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.full((1, 1), value, dtype=np.float32))
        try:
            result = client.infer(model, [tensor], headers=dict(headers or {}), parameters=params)
        except InferenceServerException as exc:
            return f"{exc.status()}: {exc.message()}"
        return float(result.as_numpy("OUTPUT0")[0][0]) - value


def inference_counts(server: RunningTriton, model: str = "scorer") -> dict[str, int]:
    snapshot = parse_metrics(fetch_metrics(TritonEndpoint(server.address)))
    return {key[1]: c.inference_count for key, c in snapshot.models.items() if key[0] == model}


def test_the_router_needs_no_folder_and_keeps_the_signature(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
    repo = server.log_path.parent / "repo"  # run_tritonserver logs next to the repository
    assert (repo / "scorer").is_dir() and not (repo / PUBLIC).exists()
    loaded = target_config(server, PUBLIC)
    assert signature_mismatch(loaded, target_config(server)) is None
    assert signature_mismatch(target_config(server, "scorer_twin"), target_config(server)) is None
    assert router_variants(loaded) == [Variant("scorer", 1, 90), Variant("scorer", 2, 10)]


def test_a_router_read_back_through_the_config_api_is_known_again(server: RunningTriton) -> None:
    """A restarted operator reads each pod's router back (the config API, as its client reads it) and
    reloads only a pod whose router differs from what it wants."""
    variants = [Variant("scorer", 1, 90), Variant("scorer", 2, 10)]
    load_router(server, variants)
    endpoint = TritonEndpoint(SERVER)
    loaded = triton.model_config(endpoint, PUBLIC)
    target = triton.model_config(endpoint, "scorer")
    assert router_matches(loaded, router_config(PUBLIC, target, variants, sticky_key=STICKY, pin_key=PIN))
    other = [Variant("scorer", 1, 50), Variant("scorer", 2, 50)]
    assert not router_matches(loaded, router_config(PUBLIC, target, other, sticky_key=STICKY, pin_key=PIN))
    assert not router_matches(loaded, router_config(PUBLIC, target, variants, sticky_key="", pin_key=PIN))


@pytest.mark.timeout(180)
def test_a_90_10_split_is_exact_in_tritons_own_counts(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
    clients, sent, deadline = Clients(server), 2000, time.monotonic() + 120

    def one(i: int) -> float | str:
        if time.monotonic() > deadline:
            return "not sent: out of time"
        return clients.infer("http" if i % 2 else "grpc")

    before = inference_counts(server)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(sent)))
    after = inference_counts(server)
    delta = {v: after.get(v, 0) - before.get(v, 0) for v in ("1", "2")}
    outputs = Counter(results)
    assert outputs[1.0] + outputs[2.0] == sent, outputs.most_common(4)
    assert delta == {"1": outputs[1.0], "2": outputs[2.0]}
    # One router instance: smooth weighted round robin gives exactly 10% (the 1 pp is for the record).
    assert abs(delta["2"] / sent - 0.10) <= 0.01
    assert delta["2"] == 200


def test_a_sticky_key_keeps_each_user_on_one_variant_over_http_and_grpc(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
    clients = Clients(server)
    seen: dict[str, set[float | str]] = {}
    for i in range(150):
        user = f"user-{i}"
        seen[user] = {
            clients.infer("http", headers={STICKY: user}),
            clients.infer("grpc", headers={STICKY: user}),  # gRPC metadata
            clients.infer("http", params={STICKY: user}),  # a request parameter works the same
            clients.infer("http", headers={"X-User-Id": user}),  # (gRPC metadata keys are lowercase)
        }
    assert all(len(variants) == 1 for variants in seen.values()), seen
    landed = Counter(next(iter(v)) for v in seen.values())
    assert set(landed) == {1.0, 2.0} and landed[2.0] < landed[1.0]
    # A new router (a reload with the same weights) sends every user where it did before.
    load_router(server, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
    assert all({clients.infer("grpc", headers={STICKY: u})} == v for u, v in list(seen.items())[:30])


def test_a_pin_wins_over_weights_and_sticky_keys(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 100), Variant("scorer", 2, 0)])  # v2 dark
    clients = Clients(server)
    for protocol in ("http", "grpc"):
        assert {clients.infer(protocol) for _ in range(10)} == {1.0}
        assert {clients.infer(protocol, headers={PIN: "2"}) for _ in range(10)} == {2.0}
        assert {clients.infer(protocol, headers={PIN: "scorer:2", STICKY: "u1"}) for _ in range(5)} == {2.0}
        assert {clients.infer(protocol, params={PIN: "2"}) for _ in range(5)} == {2.0}
        assert {clients.infer(protocol, headers={PIN: "9"}) for _ in range(5)} == {1.0}  # names none


def test_a_variant_may_be_another_model_with_the_same_signature(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 2, 1), Variant("scorer_twin", 1, 1)], name="ranker_ab")
    clients = Clients(server)
    results = Counter(clients.infer("grpc", model="ranker_ab") for _ in range(20))
    assert results == {2.0: 10, float(TWIN_OFFSET): 10}
    assert clients.infer("http", model="ranker_ab", headers={PIN: "scorer_twin"}) == TWIN_OFFSET


@pytest.mark.timeout(180)
def test_reloading_the_router_with_new_weights_under_load_fails_no_request(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
    stop, deadline = threading.Event(), time.monotonic() + 90
    results: list[list[float | str]] = [[] for _ in range(4)]

    def client_loop(slot: int) -> None:
        clients = Clients(server)
        protocol = "http" if slot % 2 else "grpc"
        while not stop.is_set() and len(results[slot]) < 50_000 and time.monotonic() < deadline:
            results[slot].append(clients.infer(protocol))

    threads = [threading.Thread(target=client_loop, args=(slot,), daemon=True) for slot in range(4)]
    for thread in threads:
        thread.start()
    load_seconds = []
    try:
        time.sleep(0.5)
        for weights in ((50, 50), (10, 90), (90, 10), (0, 100)):
            load_seconds.append(
                load_router(server, [Variant("scorer", 1, weights[0]), Variant("scorer", 2, weights[1])])
            )
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
    sent = [r for slot in results for r in slot]
    failed = [r for r in sent if not isinstance(r, float)]
    assert not failed, (len(failed), len(sent), Counter(failed).most_common(3))
    assert all(len(slot) > 20 for slot in results), [len(slot) for slot in results]
    # The weights apply when the load call returns.
    clients = Clients(server)
    assert {clients.infer(p) for p in ("http", "grpc") * 10} == {2.0}
    print(f"reloads {load_seconds} s; {len(sent)} requests, 0 failed")


def test_a_targets_error_reaches_the_client_without_server_paths(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
    clients = Clients(server)
    http_error = clients.infer("http", value=-1.0, headers={PIN: "2"})
    grpc_error = clients.infer("grpc", value=-1.0, headers={PIN: "2"})
    # What a direct call says, less the python traceback naming the server's model folder.
    direct = direct_error(server)
    assert "\n\nAt:\n  /" in direct
    assert http_error == "500: " + direct.split("\n\nAt:")[0]
    assert grpc_error == "StatusCode.INTERNAL: " + direct.split("\n\nAt:")[0]
    assert "negative input rejected by offset 2" in str(http_error)
    assert "/" not in str(http_error) and "At:" not in str(http_error)
    assert clients.infer("grpc", headers={PIN: "2"}) == 2.0  # the router carries on


def test_a_router_whose_target_is_gone_answers_with_an_error_and_stays_ready(server: RunningTriton) -> None:
    load_router(server, [Variant("scorer", 1, 1), Variant("scorer_twin", 1, 0)], name="ranker_gone")
    with triton_grpc.InferenceServerClient(server.grpc_url) as client:
        client.unload_model("scorer_twin")
        deadline = time.monotonic() + 30
        while client.is_model_ready("scorer_twin") and time.monotonic() < deadline:
            time.sleep(0.2)
        error = Clients(server).infer("grpc", model="ranker_gone", headers={PIN: "scorer_twin"})
        assert isinstance(error, str) and "scorer_twin" in error, error
        assert client.is_model_ready("ranker_gone")
        assert Clients(server).infer("http", model="ranker_gone") == 1.0
        client.load_model("scorer_twin")


def routed_counts(server: RunningTriton, router: str) -> dict[str, tuple[int, int]]:
    """What the analysis reads: the router's (success, failure) counts by version, from /metrics."""
    snapshot = parse_metrics(fetch_metrics(TritonEndpoint(server.address)))
    return {
        version: (c.success, c.failure)
        for (name, model, version), c in snapshot.routed.items()
        if name == router and model == "scorer"
    }


def test_the_router_counts_each_variants_requests_and_failures_for_the_analysis(
    server: RunningTriton,
) -> None:
    # A new public name: its counters start at zero.
    name = f"ranker_counted_{os.environ.get(ROUTER_ENV, '')}"
    load_router(server, [Variant("scorer", 1, 50), Variant("scorer", 2, 50)], name=name)
    clients = Clients(server)
    results = Counter(clients.infer(p, model=name) for p in ("http", "grpc") * 20)  # 50/50 round robin
    # Version 2 refuses negative inputs: error responses, which Triton's own counters count as successes.
    failed = [clients.infer(p, model=name, value=-1.0, headers={PIN: "2"}) for p in ("http", "grpc") * 3]
    assert results == {1.0: 20, 2.0: 20} and all(isinstance(f, str) for f in failed), (results, failed)
    want = {"1": (20, 0), "2": (20, 6)}
    deadline = time.monotonic() + 10  # the python router publishes its counts every second
    while (counts := routed_counts(server, name)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counts == want


def test_sticky_users_land_where_the_python_reference_puts_them(server: RunningTriton) -> None:
    """Both routers hash a key the same way (blake2b, weighted rendezvous): users keep their variant
    whichever router serves them, across operator upgrades too."""
    load_router(server, [Variant("scorer", 1, 70), Variant("scorer", 2, 30)])
    clients = Clients(server)

    def reference(user: str) -> float:  # render/router_model.py's sticky_choice, by hand
        def score(version: int, weight: int) -> float:
            digest = hashlib.blake2b(f"scorer:{version}\0{user}".encode(), digest_size=8).digest()
            return weight / -math.log((int.from_bytes(digest, "big") + 0.5) / 2.0**64)

        return 1.0 if score(1, 70) > score(2, 30) else 2.0

    users = [f"user-{i}" for i in range(120)]
    landed = {u: clients.infer("grpc" if i % 2 else "http", headers={STICKY: u}) for i, u in enumerate(users)}
    assert landed == {u: reference(u) for u in users}
    assert set(landed.values()) == {1.0, 2.0}


def direct_error(server: RunningTriton) -> str:
    """The message a client calling version 2 directly gets for a negative input."""
    tensor = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.full((1, 1), -1.0, dtype=np.float32))
    with triton_http.InferenceServerClient(server.http_url) as client:
        try:
            client.infer("scorer", [tensor], model_version="2")
        except InferenceServerException as exc:
            return str(exc.message())
    raise AssertionError("a negative input did not fail")
