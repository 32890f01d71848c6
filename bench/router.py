"""The router's cost, measured with NVIDIA's perf_analyzer: each model called directly and through the
router, side by side in one run.

Real tritonserver (the nvidia-pytriton wheel) on loopback; perf_analyzer from the tritonclient 2.51
wheel (.ci/perf-analyzer.sh installs it into the cache). Two models, each with versions 1 and 2 and a
router at rest in front of them (a Canary at 100 % stable: version 1 weight 100, version 2 weight 0):
- `mnist`: the demo's MNIST MLP built by `model-builders onnx-python` (onnxruntime in the python
  backend; dynamic batching up to 8, preferred 4, 2 ms queue delay), as sandbox/mnist.py builds it;
- `scorer`: the sub-millisecond python model of tests/integration/test_router.py (dynamic batching up
  to 16, 0.5 ms queue delay).
"Routed" is the router the operator loads (render/router.py: the native C++ backend where it is built,
else the python one); `python_router` (`--python-router`) measures the python one beside it.
For each model, protocol (gRPC, HTTP) and concurrency, one perf_analyzer run direct and one routed,
alternating which goes first from round to round so machine noise hits both alike; medians of the
rounds, the routed/direct throughput ratio and the p50 added, and the model's mean batch size in each
mode (from Triton's metrics). `python -m bench.router` prints the tables (`--json`: the figures).
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from triton_operator.render.router import Variant, native_router, router_config, router_files
from triton_operator.triton.client import TritonEndpoint
from triton_operator.triton.metrics import fetch_metrics, parse_metrics

from sandbox.config import REPO_ROOT
from sandbox.tritonserver import RunningTriton, run_tritonserver
from tests.support.models import write_versioned

ADDRESS = "127.33.0.2"
MODELS = ("mnist", "scorer")
PROTOCOLS = ("grpc", "http")
# The router's name in front of model {}, by router: the one the operator uses (native where built)
# and, with `python_router`, the python one beside it.
ROUTERS = {"routed": "{}_routed", "python": "{}_python"}


def perf_analyzer() -> Path:
    """The cached perf_analyzer wrapper (installed on first use; needs PyPI then, not afterwards)."""
    script = REPO_ROOT / ".ci" / "perf-analyzer.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: perf_analyzer is not installed: {done.stderr.strip()}")
    return Path(done.stdout.strip().splitlines()[-1])


def write_mnist(repo: Path, work: Path) -> None:
    """The demo's MNIST MLP (examples/models/mnist_mlp.py, `model-builders onnx-python`) as versions 1, 2."""
    env_path = f"{REPO_ROOT / 'operator'}:{REPO_ROOT}"

    def run(*args: str) -> None:
        subprocess.run(
            [sys.executable, *args],
            env={"PYTHONPATH": env_path, "PATH": str(Path(sys.executable).parent)},
            check=True,
            timeout=300,
            capture_output=True,
        )

    run(str(REPO_ROOT / "examples" / "models" / "mnist_mlp.py"), "--out", str(work))
    run(
        "-m", "model_builders", "onnx-python", str(work / "mnist_mlp.onnx"), "--name", "mnist",
        "-o", str(repo), "--max-batch-size", "8", "--dynamic-batching", "--preferred-batch-size", "4",
        "--max-queue-delay-us", "2000",
    )  # fmt: skip
    folder = repo / "mnist"
    shutil.copytree(folder / "1", folder / "2")
    config = folder / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { specific: { versions: [1, 2] } }\n")


def load_routers(server: RunningTriton, models: Sequence[str], routers: Sequence[str]) -> None:
    """Each model, and routers at rest in front of it (version 1 weight 100, version 2 weight 0)."""
    with triton_grpc.InferenceServerClient(server.grpc_url) as client:
        for model in models:
            client.load_model(model)
            with triton_http.InferenceServerClient(server.http_url) as http:
                target = http.get_model_config(model)
            split = [Variant(model, 1, 100), Variant(model, 2, 0)]
            for router in routers:
                native = None if router == "routed" else False
                name = ROUTERS[router].format(model)
                config = router_config(name, target, split, native=native)
                client.load_model(name, config=json.dumps(config), files=router_files(native=native))


def measure(
    pa: Path, server: RunningTriton, model: str, protocol: str, concurrency: int, window_ms: int, out: Path
) -> dict[str, float]:
    """One perf_analyzer run: three windows of `window_ms` at `concurrency`; req/s and latencies (ms)."""
    url = server.grpc_url if protocol == "grpc" else server.http_url
    csv_path = out / f"{model}-{protocol}-c{concurrency}.csv"
    args = [
        str(pa), "-m", model, "-x", "1", "-u", url, "-i", protocol,
        f"--concurrency-range={concurrency}:{concurrency}", f"--measurement-interval={window_ms}",
        # Three windows and their average, whatever their spread (perf_analyzer compares the slowest
        # window's p50 with the fastest's): the side-by-side rounds judge noise, not perf_analyzer.
        "--stability-percentage=100000", "--max-trials=3", "--percentile=50", "--input-data=zero",
        "-f", str(csv_path),
    ]  # fmt: skip
    for attempt in range(3):
        # A window in which no request completed (a stall of the shared machine) is no measurement to
        # perf_analyzer, however wide the band: such a run is run again.
        done = subprocess.run(args, capture_output=True, text=True, timeout=120 + 6 * window_ms / 1000)
        if done.returncode == 0:
            break
        said = done.stdout + done.stderr
        stalled = "stable measurement" in said or "No valid requests" in said
        if attempt == 2 or not stalled:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"perf_analyzer on {model} ({protocol}, c{concurrency}) failed: {tail}")
    with open(csv_path, newline="") as f:
        row = next(csv.DictReader(f))
    return {
        "rps": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
    }


def batch_counts(server: RunningTriton, model: str) -> tuple[int, int]:
    """The model's inferences and executions so far (all versions), from Triton's metrics."""
    rows = [
        c
        for (m, _), c in parse_metrics(fetch_metrics(TritonEndpoint(server.address))).models.items()
        if m == model
    ]
    return sum(c.inference_count for c in rows), sum(c.execution_count for c in rows)


def run(
    window_ms: int = 1000,
    rounds: int = 3,
    concurrencies: tuple[int, ...] = (1, 8, 32),
    models: Sequence[str] = MODELS,
    protocols: Sequence[str] = PROTOCOLS,
    python_router: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {"grpc_c1": {direct_rps, routed_rps, rps_ratio, added_p50_ms, ...}, ...}}; with
    `python_router` also python_rps, python_ratio and python_added_p50_ms (the python router)."""
    pa = perf_analyzer()
    routers = ("routed", "python") if python_router else ("routed",)
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        repo, out = Path(tmp) / "repo", Path(tmp) / "out"
        out.mkdir()
        if "scorer" in models:
            write_versioned(repo, "scorer", [1, 2])
        if "mnist" in models:
            write_mnist(repo, Path(tmp))
        with run_tritonserver(repo, ADDRESS) as server:
            load_routers(server, models, routers)
            runs: dict[tuple[str, str, int, str], list[dict[str, float]]] = {}
            batches: dict[tuple[str, str, int, str], list[int]] = {}
            for round_ in range(rounds):
                for model in models:
                    for protocol in protocols:
                        for concurrency in concurrencies:
                            modes = ("direct", *routers)
                            for mode in modes if round_ % 2 == 0 else tuple(reversed(modes)):
                                name = model if mode == "direct" else ROUTERS[mode].format(model)
                                key = (model, protocol, concurrency, mode)
                                before = batch_counts(server, model)
                                figures = measure(pa, server, name, protocol, concurrency, window_ms, out)
                                after = batch_counts(server, model)
                                runs.setdefault(key, []).append(figures)
                                total = batches.setdefault(key, [0, 0])
                                total[0] += after[0] - before[0]
                                total[1] += after[1] - before[1]
            return {
                model: {
                    f"{protocol}_c{concurrency}": _row(runs, batches, (model, protocol, concurrency), routers)
                    for protocol in protocols
                    for concurrency in concurrencies
                }
                for model in models
            }


def _row(
    runs: dict[tuple[str, str, int, str], list[dict[str, float]]],
    batches: dict[tuple[str, str, int, str], list[int]],
    key: tuple[str, str, int],
    routers: Sequence[str],
) -> dict[str, float]:
    row: dict[str, float] = {}
    for mode in ("direct", *routers):
        for figure in ("rps", "p50_ms", "p99_ms"):
            row[f"{mode}_{figure}"] = statistics.median(r[figure] for r in runs[(*key, mode)])
        inferences, executions = batches[(*key, mode)]
        row[f"{mode}_batch"] = inferences / executions if executions else 0.0
    row["rps_ratio"] = row["routed_rps"] / row["direct_rps"] if row["direct_rps"] else 0.0
    row["added_p50_ms"] = row["routed_p50_ms"] - row["direct_p50_ms"]
    if "python" in routers:
        row["python_ratio"] = row["python_rps"] / row["direct_rps"] if row["direct_rps"] else 0.0
        row["python_added_p50_ms"] = row["python_p50_ms"] - row["direct_p50_ms"]
    return {k: round(v, 3) for k, v in row.items()}


def report(figures: dict[str, dict[str, dict[str, float]]], rounds: int, window_ms: int) -> None:
    """The tables make bench prints: one per model ("batch": the model's mean batch size in each mode)."""
    which = "native (C++ backend)" if native_router() else "python"
    for model, rows in figures.items():
        print(
            f"\nRouter (canary/A-B), {which}, at rest in front of {model}, against calling it directly, "
            f"perf_analyzer, {rounds} rounds of 3 x {window_ms} ms, medians"
        )
        columns = ["direct rps", "routed rps", "ratio", "p50 +ms", "p50 direct", "p99 direct", "p99 routed",
                   "batch dir", "batch rtd"]  # fmt: skip
        python = any("python_ratio" in row for row in rows.values())
        if python:
            columns += ["py ratio", "py p50 +ms"]
        print(f"{'':10}" + "".join(f"{c:>11}" for c in columns))
        for key, row in rows.items():
            line = (
                f"{key:10}{row['direct_rps']:11.0f}{row['routed_rps']:11.0f}{row['rps_ratio']:11.2f}"
                f"{row['added_p50_ms']:11.2f}{row['direct_p50_ms']:11.2f}{row['direct_p99_ms']:11.2f}"
                f"{row['routed_p99_ms']:11.2f}{row['direct_batch']:11.2f}{row['routed_batch']:11.2f}"
            )
            if python:
                line += f"{row['python_ratio']:11.2f}{row['python_added_p50_ms']:11.2f}"
            print(line)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.router")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=1000)
    parser.add_argument("--concurrencies", default="1,8,32")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--python-router", action="store_true", help="the python router too, side by side")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON, not tables")
    args = parser.parse_args()
    result = run(
        window_ms=args.window_ms,
        rounds=args.rounds,
        concurrencies=tuple(int(c) for c in args.concurrencies.split(",")),
        models=args.models.split(","),
        protocols=args.protocols.split(","),
        python_router=args.python_router,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args.rounds, args.window_ms)
