"""Record real Triton metrics texts for the unit tests of `triton_operator.triton.metrics`.

Run from the repository root (takes ~15 s, needs only the test venv):

    /root/.cache/triton-operator-sandbox/venv-dev/bin/python tests/golden/triton/capture.py

It starts the real tritonserver (sandbox/tritonserver.py, summary latencies on), loads two
python-backend models with dynamic batching, and saves three scrapes of `/metrics` next to this file:
`idle.prom` (models loaded, no traffic), `batched.prom` (after concurrent requests, so executions
carry several inferences) and `failures.prom` (after requests to a model that raises). `capture.json`
records the traffic that was sent, so tests assert against what happened rather than against numbers
copied out of the texts. No GPU on the capture machine: the texts have CPU series only.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, when run as a script

from sandbox.tritonserver import run_tritonserver  # noqa: E402
from tests.golden.triton.triton_models import FAILING_PY, send_concurrent, write_model  # noqa: E402

ADDRESS = "127.30.0.40"
SERVER_ARGS = ["--metrics-config=summary_latencies=true", "--load-model=adder", "--load-model=failing"]
BATCHED_REQUESTS, CONCURRENCY, FAILED_REQUESTS = 48, 8, 6


def scrape(url: str) -> str:
    """GET the metrics text."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def main() -> None:
    """Start Triton, send the recorded traffic, save the scrapes and what was sent."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_model(repo, "adder")
        write_model(repo, "failing", FAILING_PY)
        with run_tritonserver(repo, ADDRESS, extra_args=SERVER_ARGS) as server:
            idle = scrape(server.metrics_url)
            started = time.monotonic()
            ok = send_concurrent(server.http_url, "adder", BATCHED_REQUESTS, CONCURRENCY)
            assert ok == [None] * BATCHED_REQUESTS, ok
            batched = scrape(server.metrics_url)
            elapsed = time.monotonic() - started
            failed = send_concurrent(server.http_url, "failing", FAILED_REQUESTS, CONCURRENCY)
            assert all(f is not None for f in failed), failed
            failures = scrape(server.metrics_url)
    for name, text in (("idle", idle), ("batched", batched), ("failures", failures)):
        (HERE / f"{name}.prom").write_text(text)
    meta = {
        "triton_server_args": SERVER_ARGS,
        "batched": {
            "model": "adder",
            "version": "1",
            "requests": BATCHED_REQUESTS,
            "concurrency": CONCURRENCY,
        },
        "batched_elapsed_s": round(elapsed, 3),
        "failures": {"model": "failing", "version": "1", "requests": FAILED_REQUESTS},
    }
    (HERE / "capture.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote idle.prom, batched.prom, failures.prom, capture.json to {HERE}")


if __name__ == "__main__":
    main()
