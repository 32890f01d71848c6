"""Rollout part of `make bench` (issue 9), side by side in one run:

- on a real tritonserver (no cluster): the HTTP stall while another model loads, a load over HTTP
  against the operator's load over gRPC; the split error of the router at 90/10 over 10,000 requests,
  counted from Triton's `nv_inference_count`;
- on the sandbox: a canary's wall time from the spec change to the promotion against the sum of its
  step pauses, and the reaction time of a rollback from the moment a failing canary gets traffic.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from kubernetes import client
from triton_operator.render.router import Variant, router_config, router_files
from triton_operator.triton.client import TritonEndpoint, load_model, unload_model

from bench.run import poll
from sandbox.tritonserver import run_tritonserver
from tests.e2e.conftest import OperatorProcess, Sandbox
from tests.golden.triton.triton_models import ADDER_PY, write_model
from tests.support.load import Load
from tests.support.models import FAILING_PY, SLOW_INIT_PY, write_versioned
from tests.support.objects import apply, credentials_secret, server_pods, tritonserver
from tests.support.scorer import MODEL, canary_model, publish, rollout_of

ADDRESS = "127.31.0.3"
SPLIT_REQUESTS = 10_000
CANARY_STEPS = ((10, 10), (50, 10), (100, 5))  # (weight %, pause s)


def _infer(http: Any, model: str) -> None:
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    http.infer(model, [inp])


def _max_latency_during(http_url: str, load: Any) -> tuple[float, float]:
    """(p99 before, max during) of one HTTP client's inferences while `load()` runs (bounded)."""
    http = triton_http.InferenceServerClient(http_url, network_timeout=60)
    try:
        before = []
        for _ in range(200):
            start = time.perf_counter()
            _infer(http, "serving")
            before.append(time.perf_counter() - start)
        done = threading.Event()
        during: list[float] = []

        def client_loop() -> None:  # its own client: tritonclient's HTTP client is not thread-safe
            own = triton_http.InferenceServerClient(http_url, network_timeout=60)
            deadline = time.monotonic() + 30
            try:
                while not done.is_set() and time.monotonic() < deadline:
                    start = time.perf_counter()
                    _infer(own, "serving")
                    during.append(time.perf_counter() - start)
            finally:
                own.close()

        worker = threading.Thread(target=client_loop)
        worker.start()
        time.sleep(0.2)
        load()
        done.set()
        worker.join(60)
    finally:
        http.close()
    return sorted(before)[int(len(before) * 0.99)], max(during)


def run_local(split_requests: int = SPLIT_REQUESTS) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        repo = Path(tmp) / "repo"
        write_model(repo, "serving", ADDER_PY, max_queue_delay_us=0)
        write_model(repo, "slow_init", SLOW_INIT_PY)
        write_versioned(repo, "scorer", [1, 2])
        with run_tritonserver(repo, ADDRESS, extra_args=["--strict-readiness=false"]) as server:
            ep = TritonEndpoint(ADDRESS)
            load_model(ep, "serving")

            def http_load() -> None:
                with triton_http.InferenceServerClient(server.http_url, network_timeout=60) as c:
                    c.load_model("slow_init")

            for label, how in (("http", http_load), ("grpc", lambda: load_model(ep, "slow_init"))):
                p99, worst = _max_latency_during(server.http_url, how)
                figures[f"stall_{label}_p99_before_ms"] = p99 * 1000
                figures[f"stall_{label}_max_during_ms"] = worst * 1000
                unload_model(ep, "slow_init")
                time.sleep(2)

            load_model(ep, "scorer")
            with triton_http.InferenceServerClient(server.http_url) as http:
                target = http.get_model_config("scorer")
            config = router_config("ranker", target, [Variant("scorer", 1, 90), Variant("scorer", 2, 10)])
            with triton_grpc.InferenceServerClient(server.grpc_url) as grpc:
                grpc.load_model("ranker", config=json.dumps(config), files=router_files())
            before = _counts(server.metrics_url)

            def send(count: int) -> None:
                with triton_http.InferenceServerClient(server.http_url) as http:
                    for _ in range(count):
                        _infer(http, "ranker")

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(send, [split_requests // 8] * 8))
            delta = _counts(server.metrics_url) - before
            share = 100.0 * delta["2"] / (delta["1"] + delta["2"])
            figures["split_requests"] = delta["1"] + delta["2"]
            figures["split_error_pp"] = abs(share - 10.0)
    return figures


def _counts(metrics_url: str) -> Counter[str]:
    import urllib.request

    counts: Counter[str] = Counter()
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("nv_inference_count{") and 'model="scorer"' in line:
                version = line.split('version="', 1)[1].split('"', 1)[0]
                counts[version] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def run_cluster(
    sb: Sandbox, log_dir: Path, canary_steps: tuple[tuple[int, int], ...] = CANARY_STEPS
) -> dict[str, Any]:
    """Canary wall time against its pauses, and rollback reaction time, on a 1-replica server."""
    core = client.CoreV1Api(sb.api)
    operator = OperatorProcess(sb, log_dir / "rollout-operator.log", status_period_s=3)
    operator.start()
    ns = f"bench-ro-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    figures: dict[str, Any] = {}
    try:
        poll(lambda: bool(core.list_namespaced_service_account(ns).items), 30, "the service account")
        workdir = Path(tempfile.mkdtemp(prefix="bench-ro-"))
        for prefix, source, version in (("1", ADDER_PY, 1), ("2", ADDER_PY, 2), ("3", FAILING_PY, 3)):
            publish(sb, workdir, f"{MODEL}-bench/{prefix}", source, version)
        apply(sb, ns, credentials_secret(), tritonserver(1))
        sb.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=180s")
        steps = [{"weight": weight, "pauseSeconds": pause} for weight, pause in canary_steps]
        analysis = {"intervalSeconds": 5, "minRequests": 50, "maxFailureRatio": 0.05, "maxLatencyRatio": 9}
        rollout = {"strategy": "Canary", "steps": steps, "analysis": analysis}
        apply(sb, ns, canary_model(sb, 1, f"{MODEL}-bench/1", rollout))
        sb.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=240s")
        load = Load([p.status.pod_ip for p in server_pods(sb, ns)]).start()
        try:
            start = time.perf_counter()
            apply(sb, ns, canary_model(sb, 2, f"{MODEL}-bench/2", rollout))
            poll(lambda: rollout_of(sb, ns).get("phase") == "Progressing", 240, "the canary's start")
            started = time.perf_counter()
            poll(lambda: rollout_of(sb, ns).get("stableVersion") == "2", 240, "the promotion")
            figures["rollout_staging_and_loading_s"] = started - start
            figures["rollout_steps_wall_s"] = time.perf_counter() - started
            figures["rollout_pauses_sum_s"] = float(sum(s["pauseSeconds"] for s in steps))
            figures["rollout_weights"] = "/".join(str(s["weight"]) for s in steps)
            apply(sb, ns, canary_model(sb, 3, f"{MODEL}-bench/3", rollout))
            poll(lambda: rollout_of(sb, ns).get("phase") == "Progressing", 240, "the failing canary's start")
            onset = time.perf_counter()
            poll(lambda: rollout_of(sb, ns).get("phase") == "RolledBack", 240, "the rollback")
            figures["rollback_after_onset_s"] = time.perf_counter() - onset
            figures["analysis_interval_s"] = float(analysis["intervalSeconds"])
        finally:
            load.finish()
        figures["failed_requests"] = float(len(load.failed))
    finally:
        core.delete_namespace(ns)
        operator.stop()
    return figures


def report(local: dict[str, float], cluster: dict[str, Any]) -> None:
    http_max, grpc_max = local["stall_http_max_during_ms"], local["stall_grpc_max_during_ms"]
    print("\nRollouts")
    print(f"  HTTP inference latency while another model loads over HTTP: max {http_max:.0f} ms")
    print(f"  ... while it loads over gRPC (the operator's way): max {grpc_max:.0f} ms")
    error, count = local["split_error_pp"], local["split_requests"]
    print(f"  router split at 90/10: {error:.2f} pp off over {count:.0f} requests")
    wall, pauses = cluster["rollout_steps_wall_s"], cluster["rollout_pauses_sum_s"]
    print(f"  canary {cluster['rollout_weights']}: its steps took {wall:.1f} s for {pauses:.0f} s of pauses")
    reaction, interval = cluster["rollback_after_onset_s"], cluster["analysis_interval_s"]
    print(f"  rollback of a canary failing 20%: {reaction:.1f} s from its start (interval {interval:.0f} s)")
    print(f"  failed client requests in both: {cluster['failed_requests']:.0f} (the broken canary's own)")
