"""Scale part of `make bench`: 1,000 TritonModels on 10 TritonServers in one namespace, the operator alone.

The servers have 0 replicas and the staging Jobs use an image the sandbox does not run (their pods
wait), so nothing but the operator (and the control plane) works: what is measured is its cost.
- apply -> every model has a status about its current spec (observedGeneration, conditions);
- at rest: the operator's RSS, threads and CPU, and its API reads and writes per minute (audit log);
- a restarted operator, after all 10 servers were deleted while it was down: -> every model says so;
- a server created again -> its 100 models' status moves on (a server event to its models' status);
- deleting all models: every model's finalizer done (the namespace goes afterwards, unmeasured: the
  sandbox's fake kubelet is slow to remove 1,000 waiting staging pods).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.run import audit_counts, new_namespace, poll
from tests.e2e.conftest import OperatorProcess, Sandbox

# An image the pod runner does not run: staging pods wait (SandboxUnsupportedImage), as they would on
# a cluster that cannot pull it, instead of starting 1,000 processes on this machine.
IDLE_STAGING_IMAGE = "bench.invalid/not-run:0"
GROUP = ("tritonoperator.dev", "v1alpha1")


def _server(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": name},
        "spec": {"replicas": 0, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}},
    }


def _model(name: str, server: str) -> dict[str, Any]:
    source = {"s3": {"bucket": "models", "prefix": f"{name}/1", "credentialsSecret": {"name": "s3"}}}
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": {"serverRef": {"name": server}, "version": 1, "source": source},
    }


def _apply(sb: Sandbox, ns: str, objs: list[dict[str, Any]]) -> None:
    items = json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    # 1,010 objects, each through admission's CEL rules: 52 s on a quiet machine, past kubectl's usual
    # 120 s limit of these helpers on a busy one (the bench measures it; it is no reason to stop).
    sb.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=items, timeout=900)


def _models(sb: Sandbox, ns: str) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(sb.api)
    return list(api.list_namespaced_custom_object(*GROUP, ns, "tritonmodels", _request_timeout=60)["items"])


def _ready_reason(obj: dict[str, Any]) -> str | None:
    """The Ready condition's reason if the status is about the current spec, else None."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return str(ready["reason"]) if ready else None


def _all_current(sb: Sandbox, ns: str, count: int, reason: str | None = None) -> bool:
    objs = _models(sb, ns)
    reasons = [_ready_reason(o) for o in objs]
    return len(objs) == count and all(r is not None and (reason is None or r == reason) for r in reasons)


def _proc_figures(pid: int) -> tuple[float, int, float]:
    """(RSS in MB, threads, CPU seconds used so far) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    threads = int(fields["Threads"])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
    return rss_mb, threads, cpu_s


def run_scale_bench(
    sb: Sandbox, log_dir: Path, *, models: int = 1000, servers: int = 10, rest_s: float = 60
) -> dict[str, float]:
    core = client.CoreV1Api(sb.api)
    operator = OperatorProcess(
        sb,
        log_dir / "scale-operator.log",
        status_period_s=10,
        env={"TRITON_OPERATOR_IMAGE": IDLE_STAGING_IMAGE},
    )
    operator.start()
    figures: dict[str, float] = {}
    ns = new_namespace(core)
    try:
        server_names = [f"pool-{i}" for i in range(servers)]
        placement = {f"m-{i:04d}": server_names[i % servers] for i in range(models)}
        start = time.perf_counter()
        _apply(sb, ns, [_server(s) for s in server_names])
        _apply(sb, ns, [_model(m, s) for m, s in placement.items()])
        figures["applied_s"] = time.perf_counter() - start
        poll(lambda: _all_current(sb, ns, models), 600, f"a current status on all {models} models")
        figures["apply_to_all_current_s"] = time.perf_counter() - start

        time.sleep(15)  # the last status writes land; then nothing should change
        assert operator.proc is not None
        offset = sb.cfg.audit_log.stat().st_size
        _, _, cpu_before = _proc_figures(operator.proc.pid)
        time.sleep(rest_s)
        rss_mb, threads, cpu_after = _proc_figures(operator.proc.pid)
        counts, _ = audit_counts(sb.cfg.audit_log, offset)
        minutes = rest_s / 60
        figures |= {
            "rest_rss_mb": rss_mb,
            "rest_threads": threads,
            "rest_cpu_percent": 100 * (cpu_after - cpu_before) / rest_s,
            "rest_reads_per_min": counts["read"] / minutes,
            "rest_writes_per_min": counts["write"] / minutes,
        }

        operator.stop()
        for name in server_names:  # while the operator is down: every model's status goes stale
            sb.kubectl("delete", "-n", ns, f"tritonserver/{name}", "--wait=true", "--timeout=60s")
        start = time.perf_counter()
        operator.start()
        poll(lambda: _all_current(sb, ns, models, "ServerNotFound"), 600, "every model: ServerNotFound")
        figures["restart_to_all_current_s"] = time.perf_counter() - start

        start = time.perf_counter()
        _apply(sb, ns, [_server(server_names[0])])
        its_models = {m for m, s in placement.items() if s == server_names[0]}

        def its_models_moved_on() -> bool:
            objs = [o for o in _models(sb, ns) if o["metadata"]["name"] in its_models]
            return len(objs) == len(its_models) and all(
                _ready_reason(o) not in (None, "ServerNotFound") for o in objs
            )

        poll(its_models_moved_on, 300, f"the {len(its_models)} models of {server_names[0]} to see it")
        figures["server_event_to_its_models_s"] = time.perf_counter() - start
        figures["rss_after_mb"], figures["threads_after"], _ = _proc_figures(operator.proc.pid)

        start = time.perf_counter()
        sb.kubectl("delete", "-n", ns, "tritonmodels", "--all", "--wait=false")
        poll(lambda: not _models(sb, ns), 600, "every model's finalizer to be done")
        figures["delete_all_models_s"] = time.perf_counter() - start
    finally:
        if _namespace_exists(core, ns):
            core.delete_namespace(ns)
        operator.stop()
    return figures


def _namespace_exists(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespace(ns)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def report(figures: dict[str, float], models: int, servers: int) -> None:
    f = figures
    print(f"\nScale: {models} TritonModels on {servers} TritonServers (0 replicas) in one namespace")
    rows = [
        ("kubectl apply of all objects", f"{f['applied_s']:.1f} s"),
        ("apply -> every model has a current status", f"{f['apply_to_all_current_s']:.1f} s"),
        ("at rest: operator RSS", f"{f['rest_rss_mb']:.0f} MB"),
        ("at rest: operator threads", f"{f['rest_threads']:.0f}"),
        ("at rest: operator CPU", f"{f['rest_cpu_percent']:.1f} % of one core"),
        ("at rest: API reads per minute", f"{f['rest_reads_per_min']:.1f}"),
        ("at rest: API writes per minute", f"{f['rest_writes_per_min']:.1f}"),
        ("restart (servers deleted meanwhile) -> all current", f"{f['restart_to_all_current_s']:.1f} s"),
        ("server created -> its models' status", f"{f['server_event_to_its_models_s']:.1f} s"),
        ("after: operator RSS / threads", f"{f['rss_after_mb']:.0f} MB / {f['threads_after']:.0f}"),
        ("delete all models -> every finalizer done", f"{f['delete_all_models_s']:.1f} s"),
    ]  # fmt: skip
    for what, value in rows:
        print(f"  {what:52}{value:>18}")
