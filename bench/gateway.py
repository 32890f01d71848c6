"""Through the Gateway (Contour + Envoy) against straight to the pod, side by side, and how long a weight
change takes to show in traffic (informative: the gateway's cost, not the operator's).

- Throughput and p50 of the same model on the same pod, called by its pod IP and through the Gateway
  (HTTP with the model's host name, gRPC with :authority), `concurrency` clients each, alternating
  rounds so machine noise hits both alike; medians and the ratio.
- A weight flip 100/0 -> 0/100 of a model split across two servers: from the `kubectl apply` of the new
  weights to the first inference the second server's Triton counts, under steady load through the
  Gateway (the operator's reaction, the route's way through Contour to Envoy, and one scrape of 50 ms).
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
from kubernetes import client

from bench.run import poll
from sandbox import gateway as gw
from tests.e2e.conftest import OperatorProcess, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.gateway import host_of, pool_server, split_model
from tests.support.load import GatewayLoad, grpc_caller, http_infer
from tests.support.objects import apply, credentials_secret
from tests.support.scorer import MODEL, publish


def _direct_http(ip: str) -> Callable[[], None]:
    body = b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}'

    def call() -> None:
        req = urllib.request.Request(f"http://{ip}:8000/v2/models/{MODEL}/infer", data=body)
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    return call


def _direct_grpc(ip: str) -> Callable[[], None]:
    c = triton_grpc.InferenceServerClient(f"{ip}:8001")
    inp = triton_grpc.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    return lambda: c.infer(MODEL, [inp], client_timeout=30) and None


def _window(make: Callable[[], Callable[[], None]], concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests per second and median latency (ms) of `concurrency` clients for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop = time.monotonic() + seconds

    def loop(slot: int) -> None:
        call = make()  # a client each: neither tritonclient client is shared across threads
        while time.monotonic() < stop:
            start = time.perf_counter()
            call()
            latencies[slot].append(time.perf_counter() - start)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    flat = [x for row in latencies for x in row]
    return len(flat) / seconds, 1000 * statistics.median(flat) if flat else 0.0


def run(
    sb: Sandbox,
    log_dir: Path,
    rounds: int = 3,
    seconds: float = 3.0,
    concurrencies: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    core = client.CoreV1Api(sb.api)
    address = gw.up(sb.cfg, sb.cfg.kubeconfig, kubectl=str(sb.bin_dir / "kubectl"))
    operator = OperatorProcess(sb, log_dir / "gateway-operator.log", status_period_s=3)
    operator.start()
    ns = f"bench-gw-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    figures: dict[str, Any] = {}
    try:
        poll(lambda: bool(core.list_namespaced_service_account(ns).items), 30, "the service account")
        publish(sb, Path(f"/tmp/{ns}"), f"{MODEL}/1", ADDER_PY, 1)
        apply(sb, ns, credentials_secret(), pool_server("pool-a"), pool_server("pool-b"))
        for pool in ("pool-a", "pool-b"):
            sb.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonserver/{pool}", "--timeout=240s")
        servers = [{"name": "pool-a", "weight": 100}, {"name": "pool-b", "weight": 0}]
        apply(sb, ns, split_model(sb, ns, "pool-a", experiment={"servers": servers}))
        sb.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=300s")
        pod_a = _pod_ip(core, ns, "pool-a")
        pod_b = _pod_ip(core, ns, "pool-b")
        ways = {
            "http direct": lambda: _direct_http(pod_a),
            "http gateway": lambda: lambda: http_infer(address, host_of(ns)),
            "grpc direct": lambda: _direct_grpc(pod_a),
            "grpc gateway": lambda: grpc_caller(address, host_of(ns)),
        }
        for concurrency in concurrencies:
            runs: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
            for _ in range(rounds):
                for way, make in ways.items():
                    runs[way].append(_window(make, concurrency, seconds))
            for way in ways:
                rps = statistics.median(r[0] for r in runs[way])
                p50 = statistics.median(r[1] for r in runs[way])
                figures[f"{way} c{concurrency}"] = (rps, p50)
        figures["concurrencies"] = concurrencies
        figures["window_s"] = seconds
        figures["weight_flip_s"] = _weight_flip(sb, ns, address, pod_b)
    finally:
        core.delete_namespace(ns)
        operator.stop()
    return figures


def _pod_ip(core: client.CoreV1Api, ns: str, pool: str) -> str:
    selector = f"app.kubernetes.io/instance={pool},app.kubernetes.io/component=server"
    return str(core.list_namespaced_pod(ns, label_selector=selector).items[0].status.pod_ip)


def _inferences(ip: str) -> int:
    with urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    rows = [ln for ln in lines if ln.startswith("nv_inference_count{") and f'model="{MODEL}"' in ln]
    return sum(int(float(ln.rsplit(" ", 1)[1])) for ln in rows)


def _weight_flip(sb: Sandbox, ns: str, address: str, pod_b: str) -> float:
    """Seconds from applying 0/100 to pool-b's first inference, under load through the Gateway."""
    load = GatewayLoad(address, host_of(ns), threads_per_protocol=1).start()
    try:
        time.sleep(2)
        before = _inferences(pod_b)
        servers = [{"name": "pool-a", "weight": 0}, {"name": "pool-b", "weight": 100}]
        apply(sb, ns, split_model(sb, ns, "pool-a", experiment={"servers": servers}))  # poll starts now
        return poll(lambda: _inferences(pod_b) > before, 60, "pool-b's first request")
    finally:
        load.finish()


def report(figures: dict[str, Any], rounds: int) -> None:
    print(
        f"\nThrough the Gateway (Contour + Envoy) against the pod directly, {rounds} rounds of "
        f"{figures['window_s']:g} s, medians"
    )
    print(f"{'':18}{'direct rps':>12}{'gateway rps':>12}{'ratio':>8}{'p50 direct':>12}{'p50 gateway':>12}")
    for proto in ("http", "grpc"):
        for concurrency in figures["concurrencies"]:
            d_rps, d_p50 = figures[f"{proto} direct c{concurrency}"]
            g_rps, g_p50 = figures[f"{proto} gateway c{concurrency}"]
            print(
                f"{proto + ' c' + str(concurrency):18}{d_rps:12.0f}{g_rps:12.0f}{g_rps / d_rps:8.2f}"
                f"{d_p50:12.2f}{g_p50:12.2f}"
            )
    flip = figures["weight_flip_s"]
    print(
        f"  weight flip 100/0 -> 0/100 across servers: new pool's first request {flip:.2f} s after the apply"
    )
