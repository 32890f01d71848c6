"""The router's cost: requests through the router against calling the model directly, side by side.

Real tritonserver (the nvidia-pytriton wheel) on loopback, the python test model of
tests/integration/test_router.py (tests/support/models.py writes it: versions 1 and 2, dynamic batching)
and the router at 90/10 over them.
Throughput and p50 at concurrency 1 and 8, over HTTP and gRPC; runs alternate (direct, router, ...)
so machine noise hits both alike; medians of the rounds, and the router/direct ratios.
`python -m bench.router` prints the figures as JSON.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from triton_operator.render.router import Variant, router_config, router_files
from triton_operator.triton.client import TritonEndpoint
from triton_operator.triton.metrics import fetch_metrics, parse_metrics

from sandbox.tritonserver import RunningTriton, run_tritonserver
from tests.support.models import write_versioned

ADDRESS = "127.31.0.2"
ROUTER = "ranker"


def _window(
    server: RunningTriton, model: str, protocol: str, concurrency: int, seconds: float
) -> dict[str, float]:
    """Requests per second and latency quantiles (ms) of `concurrency` closed-loop clients."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_at = time.monotonic() + 0.3
    stop_at = start_at + seconds

    def loop(slot: int) -> None:
        module: Any = triton_http if protocol == "http" else triton_grpc
        client: Any = (
            triton_http.InferenceServerClient(server.http_url)
            if protocol == "http"
            else triton_grpc.InferenceServerClient(server.grpc_url)
        )
        tensor = module.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        client.infer(model, [tensor])  # connect before the window opens
        while time.monotonic() < start_at:
            time.sleep(0.001)
        while (now := time.perf_counter()) and time.monotonic() < stop_at and len(latencies[slot]) < 200_000:
            try:
                client.infer(model, [tensor])
            except Exception:
                errors[slot] += 1
            latencies[slot].append(time.perf_counter() - now)
        client.close()

    threads = [threading.Thread(target=loop, args=(slot,), daemon=True) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    all_ms = sorted(1000 * x for slot in latencies for x in slot)
    return {
        "rps": len(all_ms) / seconds,
        "p50_ms": statistics.median(all_ms),
        "p99_ms": all_ms[int(0.99 * (len(all_ms) - 1))],
        "errors": float(sum(errors)),
    }


def _target_batch(server: RunningTriton) -> tuple[int, int]:
    models = parse_metrics(fetch_metrics(TritonEndpoint(server.address))).models
    rows = [c for (m, _), c in models.items() if m == "scorer"]
    return sum(c.inference_count for c in rows), sum(c.execution_count for c in rows)


def run(
    seconds: float = 3.0,
    rounds: int = 2,
    concurrencies: tuple[int, ...] = (1, 8),
    *,
    instance_count: int = 1,
    max_queue_delay_us: int = 0,
) -> dict[str, Any]:
    """Figures per protocol and concurrency: direct and router rps/p50, their ratios, target batch size."""
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        repo = Path(tmp) / "repo"
        write_versioned(repo, "scorer", [1, 2])
        with run_tritonserver(repo, ADDRESS) as server:
            with triton_grpc.InferenceServerClient(server.grpc_url) as client:
                client.load_model("scorer")
                with triton_http.InferenceServerClient(server.http_url) as http:
                    target = http.get_model_config("scorer")
                split = [Variant("scorer", 1, 90), Variant("scorer", 2, 10)]
                config = router_config(
                    ROUTER,
                    target,
                    split,
                    instance_count=instance_count,
                    max_queue_delay_us=max_queue_delay_us,
                )
                client.load_model(ROUTER, config=json.dumps(config), files=router_files())
            figures: dict[str, Any] = {}
            for protocol in ("grpc", "http"):
                for concurrency in concurrencies:
                    runs: dict[str, list[dict[str, float]]] = {"direct": [], "router": []}
                    batch = [0, 0]
                    for _ in range(rounds):
                        for mode, model in (("direct", "scorer"), ("router", ROUTER)):
                            before = _target_batch(server)
                            runs[mode].append(_window(server, model, protocol, concurrency, seconds))
                            after = _target_batch(server)
                            if mode == "router":
                                batch = [batch[0] + after[0] - before[0], batch[1] + after[1] - before[1]]
                    row = {
                        f"{mode}_{key}": statistics.median(r[key] for r in runs[mode])
                        for mode in runs
                        for key in ("rps", "p50_ms", "p99_ms")
                    }
                    row["errors"] = sum(r["errors"] for rs in runs.values() for r in rs)
                    row["rps_ratio"] = row["router_rps"] / row["direct_rps"]
                    row["added_p50_ms"] = row["router_p50_ms"] - row["direct_p50_ms"]
                    row["target_batch_via_router"] = batch[0] / batch[1] if batch[1] else 0.0
                    figures[f"{protocol}_c{concurrency}"] = {k: round(v, 3) for k, v in row.items()}
            return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
