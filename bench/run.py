"""`make bench`: the operator's overhead, measured side by side in one run on the sandbox.

Its parts: TritonServer (below), TritonModel (bench/models.py), scale (bench/scale.py: 1,000 models),
real models (bench/real_models.py: N real python-backend models on one real server, a load storm and
a scale from 2 to 4 replicas; `--only real-models` runs just that part), scale out (bench/scale_out.py:
2 -> 6 replicas across both nodes under load, 1 model and 20; `--only scale-out` runs just that part),
the canary/A-B router against direct calls with perf_analyzer (bench/router.py), rollouts
(bench/rollout.py), through the Gateway against direct calls and a weight change across servers
(bench/gateway.py).

TritonServer:
- apply -> Deployment created, and apply -> Ready, through the operator, against applying the very
  objects the operator renders directly with kubectl (then waiting for the Deployment to be available),
  less the models-loaded readiness gate that only the operator can open (see `direct`);
  runs alternate (operator, direct, operator, ...) so machine noise hits both alike; medians, ratio.
- API requests per minute at steady state: every request the operator makes (its own client and
  kopf's), counted from the apiserver's audit log by user agent, with idle Ready servers.

Timings are wall-clock on a shared machine: compare the ratios, not the absolute numbers.
`--smoke` runs every part once with the smallest counts (tests/e2e/test_bench.py does, in `make test`):
it proves the bench still runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.render.server import render_all

from sandbox import cluster
from sandbox.config import REPO_ROOT, SandboxConfig
from tests.e2e.conftest import OperatorProcess, Sandbox

OPERATOR_AGENTS = ("triton-operator/", "kopf/")
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
SERVER_SPEC: dict[str, Any] = {"replicas": 1, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}}


def poll(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `check` holds (polled every 50 ms); fails after `timeout_s`."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if check():
            return time.perf_counter() - start
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


def new_namespace(core: client.CoreV1Api) -> str:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    poll(lambda: bool(core.list_namespaced_service_account(name).items), 30, "the default service account")
    return name


def deployment_exists(apps: client.AppsV1Api, ns: str) -> Callable[[], bool]:
    return lambda: bool(apps.list_namespaced_deployment(ns).items)


def through_operator(sb: Sandbox, ns: str) -> tuple[float, float]:
    apps, custom = client.AppsV1Api(sb.api), client.CustomObjectsApi(sb.api)
    body = {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": "triton"},
        "spec": SERVER_SPEC,
    }
    start = time.perf_counter()
    sb.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))
    created = poll(deployment_exists(apps, ns), 60, "the Deployment")

    def ready() -> bool:
        obj: dict[str, Any] = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(
                "tritonoperator.dev", "v1alpha1", ns, "tritonservers", "triton"
            ),
        )
        conds = {c["type"]: c for c in obj.get("status", {}).get("conditions") or []}
        ready_cond = conds.get("Ready", {})
        return bool(
            ready_cond.get("status") == "True"
            and ready_cond.get("observedGeneration") == obj["metadata"]["generation"]
        )

    poll(ready, 180, "the TritonServer to be Ready")
    return created + 0.0, time.perf_counter() - start


def direct(sb: Sandbox, ns: str) -> tuple[float, float]:
    apps = client.AppsV1Api(sb.api)
    # The objects a user would apply by hand, without the models-loaded readiness gate: only the
    # operator sets that gate (once it loaded the server's models), so with it a Deployment applied
    # without the operator never becomes available. Without an operator there are no models to wait
    # for, and the Deployment work (schedule, start Triton, pass its readiness probe) is the same.
    spec = TritonServerSpec.model_validate(SERVER_SPEC)
    objects = render_all("triton", ns, "bench", spec, models_gate=False)
    start = time.perf_counter()
    sb.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    created = poll(deployment_exists(apps, ns), 60, "the Deployment")

    def available() -> bool:
        dep = apps.read_namespaced_deployment("triton", ns)
        return bool(dep.status and dep.status.available_replicas == 1 and dep.status.ready_replicas == 1)

    poll(available, 180, "the Deployment to be available")
    return created, time.perf_counter() - start


def audit_counts(audit_log: Path, since_offset: int) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    with open(audit_log, "rb") as f:
        f.seek(since_offset)
        data = f.read()
    for line in data.splitlines():
        event = json.loads(line)
        if str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
            counts["write" if event["verb"] in WRITE_VERBS else "read"] += 1
    return counts, since_offset + len(data)


def steady_state(sb: Sandbox, servers: int, seconds: float) -> Counter[str]:
    core = client.CoreV1Api(sb.api)
    ns = new_namespace(core)
    for i in range(servers):
        body = {
            "apiVersion": "tritonoperator.dev/v1alpha1",
            "kind": "TritonServer",
            "metadata": {"name": f"idle-{i}"},
            "spec": SERVER_SPEC,
        }
        sb.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))
    for i in range(servers):
        sb.kubectl("wait", "-n", ns, f"tritonserver/idle-{i}", "--for=condition=Ready", "--timeout=180s")
    time.sleep(5)  # let the last status writes land
    offset = sb.cfg.audit_log.stat().st_size
    time.sleep(seconds)
    counts, _ = audit_counts(sb.cfg.audit_log, offset)
    core.delete_namespace(ns)
    return counts


def main(argv: list[str] | None = None) -> int:
    from bench.gateway import report as report_gateway
    from bench.gateway import run as run_gateway_bench
    from bench.models import report as report_models
    from bench.models import run_model_bench
    from bench.real_models import DEFAULT_MODELS, run_real_models_bench
    from bench.real_models import report as report_real_models
    from bench.rollout import CANARY_STEPS, SPLIT_REQUESTS
    from bench.rollout import report as report_rollout
    from bench.rollout import run_cluster as run_rollout_cluster
    from bench.rollout import run_local as run_rollout_local
    from bench.router import perf_analyzer
    from bench.router import report as report_router
    from bench.router import run as run_router_bench
    from bench.scale import report as report_scale
    from bench.scale import run_scale_bench
    from bench.scale_out import DEFAULT_COUNTS, run_scale_out_bench
    from bench.scale_out import report as report_scale_out

    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--steady-seconds", type=float, default=float(os.environ.get("BENCH_STEADY_S", "60")))
    parser.add_argument("--idle-servers", type=int, default=2)
    parser.add_argument("--scale-models", type=int, default=int(os.environ.get("BENCH_SCALE_MODELS", "1000")))
    parser.add_argument("--scale-servers", type=int, default=10)
    real_models = int(os.environ.get("BENCH_REAL_MODELS", str(DEFAULT_MODELS)))
    parser.add_argument("--real-models", type=int, default=real_models)
    parser.add_argument(
        "--rest-seconds", type=float, default=60, help="the at-rest windows of scale/real models"
    )
    parser.add_argument("--window-seconds", type=float, default=3.0, help="each Gateway load window")
    parser.add_argument(
        "--router-window-ms", type=int, default=1000, help="each of perf_analyzer's 3 windows per router run"
    )
    parser.add_argument("--concurrencies", default="1,8,32", help="router clients; the Gateway's, less 32")
    parser.add_argument("--split-requests", type=int, default=SPLIT_REQUESTS)
    scale_out = os.environ.get("BENCH_SCALE_OUT_MODELS", ",".join(map(str, DEFAULT_COUNTS)))
    parser.add_argument("--scale-out-models", default=scale_out, help="model counts of the 2 -> 6 runs")
    parser.add_argument(
        "--only", choices=["real-models", "scale-out"], default=os.environ.get("BENCH_ONLY") or None
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=os.environ.get("BENCH_SMOKE") == "1",
        help="every part once with the smallest counts: proves the bench runs (make test runs it); "
        "its figures mean nothing",
    )
    args = parser.parse_args(argv)
    canary_steps: tuple[tuple[int, int], ...] = CANARY_STEPS
    if args.smoke:
        args.rounds, args.steady_seconds, args.idle_servers = 1, 5.0, 1
        args.scale_models, args.scale_servers, args.real_models, args.rest_seconds = 6, 2, 2, 5.0
        args.window_seconds, args.concurrencies, args.split_requests = 0.5, "1", 400
        args.router_window_ms = 500  # shorter windows may hold no request on a busy machine
        args.scale_out_models = "1"
        canary_steps = ((50, 2), (100, 1))
    concurrencies = tuple(int(c) for c in args.concurrencies.split(","))
    scale_out_counts = tuple(int(c) for c in args.scale_out_models.split(","))

    if args.only is None:
        perf_analyzer()  # installed (from PyPI, once) before this process enters the sandbox's network
    cfg = SandboxConfig.from_env(os.environ.get("BENCH_SANDBOX", "bench"))
    bins = cluster.up(cfg)
    cluster.enter(cfg)  # this process and what it starts dial pod IPs and ClusterIPs, as the tests do
    sb = Sandbox(
        cfg=cfg, bin_dir=bins.dir, api=config.new_client_from_config(config_file=str(cfg.kubeconfig))
    )
    sb.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
    sb.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    log_dir = cfg.root / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    if args.only is not None:
        try:
            if args.only == "real-models":
                real = run_real_models_bench(sb, log_dir, models=args.real_models, rest_s=args.rest_seconds)
                report_real_models(real)
            else:
                report_scale_out(run_scale_out_bench(sb, log_dir, counts=scale_out_counts))
        finally:
            if os.environ.get("BENCH_KEEP") != "1":
                cluster.down(cfg)
        return 0
    operator = OperatorProcess(sb, log_dir / "operator.log", status_period_s=10)  # the operator's default
    operator.start()
    core = client.CoreV1Api(sb.api)
    took: dict[str, float] = {}  # wall seconds of each part, printed as each ends (stderr) and at the end

    def part(name: str, started: float) -> None:
        took[name] = time.perf_counter() - started
        print(f"bench: {name} done in {took[name]:.0f} s", file=sys.stderr, flush=True)

    try:
        started = time.perf_counter()
        results: dict[str, list[tuple[float, float]]] = {"operator": [], "direct": []}
        for _ in range(args.rounds):
            for label, fn in (("operator", through_operator), ("direct", direct)):
                ns = new_namespace(core)
                results[label].append(fn(sb, ns))
                core.delete_namespace(ns)
                # Free the GPU before the next round: wait for the pods of this round to be gone.
                poll(lambda ns=ns: not core.list_namespaced_pod(ns).items, 120, "the round's pods to go")
        part("TritonServer", started)
        started = time.perf_counter()
        model_results = run_model_bench(sb, args.rounds, log_dir)
        part("TritonModel", started)
        started = time.perf_counter()
        counts = steady_state(sb, args.idle_servers, args.steady_seconds)
        part("steady state", started)
        operator.stop()
        started = time.perf_counter()
        scale = run_scale_bench(
            sb, log_dir, models=args.scale_models, servers=args.scale_servers, rest_s=args.rest_seconds
        )
        part("scale", started)
        report_scale(scale, args.scale_models, args.scale_servers)  # the longest part: kept if later fail
        started = time.perf_counter()
        real = run_real_models_bench(sb, log_dir, models=args.real_models, rest_s=args.rest_seconds)
        part("real models", started)
        report_real_models(real)
        started = time.perf_counter()
        scaled_out = run_scale_out_bench(sb, log_dir, counts=scale_out_counts)
        part("scale out", started)
        report_scale_out(scaled_out)
        started = time.perf_counter()
        router = run_router_bench(
            window_ms=args.router_window_ms, rounds=args.rounds, concurrencies=concurrencies
        )
        part("router", started)
        started = time.perf_counter()
        rollout_local = run_rollout_local(split_requests=args.split_requests)
        rollout_cluster = run_rollout_cluster(sb, log_dir, canary_steps=canary_steps)
        part("rollouts", started)
        started = time.perf_counter()
        through_gateway = run_gateway_bench(
            sb,
            log_dir,
            rounds=args.rounds,
            seconds=args.window_seconds,
            concurrencies=tuple(c for c in concurrencies if c < 32) or (1,),
        )
        part("gateway", started)
    finally:
        operator.stop()
        if os.environ.get("BENCH_KEEP") != "1":  # BENCH_KEEP=1 leaves the sandbox up for a look
            cluster.down(cfg)

    def median(label: str, i: int) -> float:
        return statistics.median(r[i] for r in results[label])

    print(f"\nTritonServer, {args.rounds} rounds each, medians (seconds)")
    print(f"{'':34}{'operator':>10}{'direct':>10}{'ratio':>8}")
    for i, what in enumerate(("apply -> Deployment created", "apply -> Ready / available")):
        op, di = median("operator", i), median("direct", i)
        print(f"{what:34}{op:10.2f}{di:10.2f}{op / di:8.2f}")
    report_models(model_results, args.rounds)
    minutes = args.steady_seconds / 60
    print(
        f"\nsteady state, {args.idle_servers} idle Ready TritonServers, {args.steady_seconds:.0f} s: "
        f"{(counts['read'] + counts['write']) / minutes:.1f} API requests/min by the operator "
        f"({counts['read'] / minutes:.1f} reads, {counts['write'] / minutes:.1f} writes)"
    )
    report_router(router, args.rounds, args.router_window_ms)
    report_rollout(rollout_local, rollout_cluster)
    report_gateway(through_gateway, args.rounds)
    print("\nwall time of each part: " + ", ".join(f"{name} {s:.0f} s" for name, s in took.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
