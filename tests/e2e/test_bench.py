"""`make bench` keeps running: every part of it, once, with the smallest counts (issue 26).

The bench broke for weeks without a test noticing (its direct baseline waited for a readiness gate only
the operator sets). This runs `python -m bench.run --smoke` as `make bench` runs it (its own sandbox,
its own operator processes) and checks that each part ran and printed its figures. No figure is judged:
timings belong to the bench, not to tests on a shared machine.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from sandbox.config import REPO_ROOT

# Each part's heading, as its report prints it, and a line of figures that must follow it.
PARTS = {
    "TritonServer": (r"^TritonServer, 1 rounds each", r"^apply -> Ready / available\s+([\d.]+)\s+([\d.]+)"),
    "TritonModel": (r"^TritonModel, 1 rounds each", r"^apply -> READY: operator .*?\s([\d.]+)\s+([\d.]+)"),
    "steady state": (r"^steady state, 1 idle", r"([\d.]+) API requests/min by the operator"),
    "scale": (r"^Scale: 6 TritonModels on 2", r"apply -> every model has a current status\s+([\d.]+) s"),
    "real models": (
        r"^Real models: 2 python-backend",
        r"storm: every model READY on both replicas\s+([\d.]+) s",
    ),
    "scale out": (
        r"^Scale out: 2 -> 6 replicas",
        r"last replica serves every model \(both above\)\s+([\d.]+)$",
    ),
    "router": (r"^Router \(canary/A-B\)", r"^grpc_c1\s+([\d.]+)\s+([\d.]+)"),
    "rollouts": (r"^Rollouts$", r"rollback of a canary failing 20%: ([\d.]+) s"),
    "gateway": (r"^Through the Gateway", r"^grpc c1\s+([\d.]+)\s+([\d.]+)"),
}


def figures_after(output: str, heading: str, figures: str) -> list[float]:
    """The numbers of the first `figures` line after `heading` in the bench's output."""
    start = re.search(heading, output, re.MULTILINE)
    assert start, f"the bench printed no {heading!r} part"
    found = re.search(figures, output[start.end() :], re.MULTILINE)
    assert found, f"the part {heading!r} printed no {figures!r} figures"
    return [float(x) for x in found.groups()]


def test_every_part_of_make_bench_runs_and_prints_its_figures() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT}",
        "BENCH_SANDBOX": "bench",
        "PYTHONUNBUFFERED": "1",
    }
    for knob in ("BENCH_ONLY", "BENCH_KEEP", "BENCH_ROUNDS", "BENCH_STEADY_S"):
        env.pop(knob, None)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "bench.run", "--smoke"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=780,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the smoke bench ran past 780 s; its output:\n{exc.stdout!s}\n{exc.stderr!s}")
    output = run.stdout
    assert run.returncode == 0, f"make bench --smoke exited {run.returncode}:\n{output}\n{run.stderr[-4000:]}"
    assert "INCOMPLETE" not in output, output
    for part, (heading, line) in PARTS.items():
        values = figures_after(output, heading, line)
        assert all(math.isfinite(v) and v >= 0 for v in values), f"{part}: {values}\n{output}"
