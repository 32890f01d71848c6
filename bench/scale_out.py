"""Scale-out part of `make bench`: a TritonServer scaled from 2 to 6 replicas across nodes under load,
layout PerReplica (issue 21), with 1 model and with 20, side by side in one run.

Everything is real, as in bench/real_models.py (whose helpers this part uses): the operator, the staging
Jobs reading the sandbox's S3, the repository server over the ReadWriteOnce PVC, a tritonserver and a
`repository-sync` sidecar in each Triton pod. The models are the adder of real_models; one of them is
named `scorer`, the model tests/support/load.py calls, so the load runs through the server's Service
during the whole scale: the persistent HTTP and gRPC clients of the e2e tests (`Load`), and clients
that open a new connection per request (kube-proxy picks a backend per connection, so these reach the
new replicas as soon as the Service lists them). Every failed request is counted.

From `kubectl scale --replicas=6` until the last new replica serves every model: every TritonModel says
Ready and loaded 6/6, and the 6 Triton pods are Ready and listed by the Service's EndpointSlices. Each
new pod's way there, sampled twice a second, seconds after the scale:
- created (the pod object), Triton live (`/v2/health/live` on the pod IP),
- copy complete: its sidecar's `/v1/held` is synced with the repository server and holds every model;
  then every TritonModel's `status.replicas[]` entry of the pod says `copyCurrent` (the operator's view),
- every model READY in the pod's repository index, the pod Ready (the models-loaded readiness gate).
The table gives the last new pod's time of each (the figure that bounds the scale) and the spread.
The 6 pods must span both GPU nodes (the sandbox's 2 x 4 GPUs); the part fails if they do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.real_models import (
    CREDENTIALS,
    SERVER,
    _apply,
    _infer_everywhere,
    _model_name,
    _models,
    _ready_in_index,
    _server_pods,
    _status_ready,
    _tritonmodel,
    _tritonserver,
    publish_models,
)
from bench.run import new_namespace, poll
from tests.e2e import kube
from tests.e2e.conftest import OperatorProcess, Sandbox
from tests.support.load import Load, http_infer, service_clients
from tests.support.scorer import MODEL

FROM_REPLICAS, TO_REPLICAS = 2, 6
DEFAULT_COUNTS = (1, 20)
STATUS_PERIOD_S = 10.0  # the operator's default
SAMPLE_S = 0.5
SYNC_PORT = 8090  # the repository-sync sidecar's /v1/held (render/repository.py)
FRESH_CLIENTS = 2  # threads opening a new connection per request, through the Service
AFTER_S = 5.0  # load kept on once the last replica serves, so the new replicas take some of it
# Each new pod's milestones, in the order they come, and how the table names them.
MILESTONES = {
    "created": "pod created",
    "live": "Triton live (/v2/health/live)",
    "synced": "copy complete: sidecar synced, every model held",
    "copy_current": "copy complete: copyCurrent in every model's status",
    "loaded": "every model READY in the pod's index",
    "ready": "pod Ready (models-loaded gate)",
}


def model_names(count: int) -> list[str]:
    """The load's model first (the scorer), then adders: `count` models in all."""
    return [MODEL] + [_model_name(i) for i in range(count - 1)]


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=3) as resp:
        answer: dict[str, Any] = json.load(resp)
    return answer


def _live(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8000/v2/health/live", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _synced(ip: str, names: list[str]) -> bool:
    """The pod's sidecar holds what the repository server lists, every model among it."""
    try:
        held = _get_json(f"http://{ip}:{SYNC_PORT}/v1/held")
    except (OSError, ValueError):
        return False
    models: dict[str, Any] = held.get("models") or {}
    return bool(held.get("synced")) and set(names) <= set(models)


def _copy_current(objs: list[dict[str, Any]], pod: str, names: list[str]) -> bool:
    """Every model's status says the pod's own copy is current."""
    seen = 0
    for obj in objs:
        if obj["metadata"]["name"] not in names:
            continue
        entries = (obj.get("status") or {}).get("replicas") or []
        entry = next((e for e in entries if e.get("pod") == pod), None)
        if entry is None or entry.get("repository") != "OwnCopy" or not entry.get("copyCurrent"):
            return False
        seen += 1
    return seen == len(names)


def _inference_count(ip: str, model: str) -> int:
    """nv_inference_count of a model on one pod (its metrics port)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("nv_inference_count{") and f'model="{model}"' in line
    )


@dataclass
class FreshLoad:
    """HTTP clients through the Service that open a new connection per request (bounded by `max_s`)."""

    ip: str
    threads_count: int = FRESH_CLIENTS
    max_s: float = 900
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> FreshLoad:
        for _ in range(self.threads_count):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                http_infer(f"{self.ip}:8000", self.ip)
                self.ok += 1
            except Exception as exc:  # every failure is counted, whatever it is
                self.failed.append(f"fresh http {self.ip}: {exc}")
            self.stop.wait(0.02)  # about 50 new connections a second per thread at most

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def _pod_ready(pod: Any) -> bool:
    return getattr(kube.pod_condition(pod, "Ready"), "status", None) == "True"


@dataclass
class ScaleLog:
    """What the sampler saw after the scale: each new pod's milestones (seconds), and the whole."""

    start: float
    old: set[str]
    pods: dict[str, dict[str, float]] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    all_status_loaded: float | None = None  # every TritonModel Ready, loaded 6/6
    all_behind_service: float | None = None  # 6 ready Triton pods, 6 addresses in the EndpointSlices
    samples: int = 0

    def mark(self, pod: str, what: str) -> None:
        self.pods.setdefault(pod, {}).setdefault(what, time.monotonic() - self.start)

    def done(self) -> bool:
        return self.all_status_loaded is not None and self.all_behind_service is not None


def _sample(sb: Sandbox, ns: str, names: list[str], log: ScaleLog) -> None:
    core = client.CoreV1Api(sb.api)
    pods = _server_pods(core, ns)
    objs = _models(sb, ns)
    fresh = [p for p in pods if p.metadata.name not in log.old]
    for pod in fresh:
        name, ip = pod.metadata.name, pod.status.pod_ip
        log.mark(name, "created")
        log.nodes[name], log.ips[name] = pod.spec.node_name, ip
        seen = log.pods[name]
        if "live" not in seen and _live(ip):
            log.mark(name, "live")
        if "synced" not in seen and _synced(ip, names):
            log.mark(name, "synced")
        if "copy_current" not in seen and _copy_current(objs, name, names):
            log.mark(name, "copy_current")
        if "loaded" not in seen and (_ready_in_index(ip) or set()) >= set(names):
            log.mark(name, "loaded")
        if "ready" not in seen and _pod_ready(pod):
            log.mark(name, "ready")
    now = time.monotonic() - log.start
    mine = [o for o in objs if o["metadata"]["name"] in names]
    done = len(mine) == len(names) and all(_status_ready(o, TO_REPLICAS) for o in mine)
    if log.all_status_loaded is None and done:
        log.all_status_loaded = now
    if log.all_behind_service is None:
        ready = {p.status.pod_ip for p in pods if _pod_ready(p)}
        if len(ready) == TO_REPLICAS and kube.endpoint_slice_ips(sb.api, ns, SERVER) == ready:
            log.all_behind_service = now
    log.samples += 1


def _one_run(sb: Sandbox, log_dir: Path, count: int, deadline_s: float) -> dict[str, Any]:
    """One TritonServer of 2 replicas with `count` models, scaled to 6 under load; its figures."""
    core = client.CoreV1Api(sb.api)
    names = model_names(count)
    figures: dict[str, Any] = {"models": count, "loadavg_before": os.getloadavg()}
    ns = new_namespace(core)
    try:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
                  "stringData": CREDENTIALS}  # fmt: skip
        objs = [secret, _tritonserver(FROM_REPLICAS)]
        _apply(sb, ns, objs + [_tritonmodel(n, sb.cfg.s3_endpoint) for n in names])
        poll(
            lambda: (
                len(_server_pods(core, ns)) == FROM_REPLICAS
                and all(_status_ready(o, FROM_REPLICAS) for o in _models(sb, ns))
            ),
            300 + 10 * count,
            f"{count} models loaded 2/2",
        )
        sb.kubectl("wait", "-n", ns, f"tritonserver/{SERVER}", "--for=condition=Ready", "--timeout=120s")
        old = {p.metadata.name for p in _server_pods(core, ns)}
        load = Load(service_clients(sb, ns), max_s=deadline_s + 120).start()
        fresh_load = FreshLoad(kube.cluster_ip(core, ns, SERVER), max_s=deadline_s + 120).start()
        log = ScaleLog(start=time.monotonic(), old=old)
        try:
            time.sleep(2)  # the load runs before the scale too
            log.start = time.monotonic()
            sb.kubectl("scale", "-n", ns, f"tritonserver/{SERVER}", f"--replicas={TO_REPLICAS}")
            figures["scale_command_s"] = time.monotonic() - log.start
            while not log.done() and time.monotonic() - log.start < deadline_s:
                began = time.monotonic()
                # A sample lost to a busy apiserver or pod is skipped; the next one counts.
                with contextlib.suppress(ApiException, OSError, ValueError):
                    _sample(sb, ns, names, log)
                time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - began)))
            figures["done_s"] = time.monotonic() - log.start if log.done() else None
            time.sleep(AFTER_S)
        finally:
            load.finish()
            fresh_load.finish()
        new = sorted(log.pods)
        figures |= {
            "loadavg_after": os.getloadavg(),
            "samples": log.samples,
            "all_status_loaded_s": log.all_status_loaded,
            "all_behind_service_s": log.all_behind_service,
            "new_pods": {p: log.pods[p] for p in new},
            "nodes": dict(Counter(p.spec.node_name for p in _server_pods(core, ns))),
            "requests_ok": sum(load.ok.values()) + fresh_load.ok,
            "requests_failed": len(load.failed) + len(fresh_load.failed),
            "failures": [f.message for f in load.failed[:5]] + fresh_load.failed[:5],
            "new_pods_took_load": sum(1 for p in new if _inference_count(log.ips[p], MODEL) > 0),
        }
        if figures["done_s"] is not None:
            fresh = [p for p in _server_pods(core, ns) if p.metadata.name not in old]
            figures["infer_failures"], _ = _infer_everywhere(fresh, names)
        (log_dir / f"scale-out-{count}.json").write_text(json.dumps(figures, indent=2, default=str))
    finally:
        core.delete_namespace(ns)
        poll(lambda: ns not in {n.metadata.name for n in core.list_namespace().items}, 300, "the namespace")
    return figures


def run_scale_out_bench(
    sb: Sandbox, log_dir: Path, *, counts: tuple[int, ...] = DEFAULT_COUNTS
) -> list[dict[str, Any]]:
    """A run per model count, one after the other, with one operator at its defaults."""
    publish_models(sb.cfg.s3_endpoint, model_names(max(counts)), log_dir / "scale-out")
    operator = OperatorProcess(sb, log_dir / "scale-out-operator.log", status_period_s=STATUS_PERIOD_S)
    operator.start()
    runs = []
    try:
        for count in counts:
            runs.append(_one_run(sb, log_dir, count, deadline_s=240 + 12 * count))
    finally:
        operator.stop()
    for run in runs:  # checked once every run is measured, so a failure still leaves the figures
        if run["done_s"] is None:
            continue  # reported as INCOMPLETE
        if len(run["nodes"]) < 2 or sum(run["nodes"].values()) != TO_REPLICAS:
            raise SystemExit(f"bench scale-out: {TO_REPLICAS} replicas not across both nodes: {run['nodes']}")
    return runs


def _last(run: dict[str, Any], what: str) -> float | None:
    """The last new pod's time of a milestone (None if a pod never got there)."""
    pods = run["new_pods"].values()
    values: list[float] = [p[what] for p in pods if what in p]
    return max(values) if len(values) == TO_REPLICAS - FROM_REPLICAS else None


def _spread(run: dict[str, Any], what: str) -> str:
    values = sorted(p[what] for p in run["new_pods"].values() if what in p)
    if not values:
        return "-"
    return f"{values[0]:.1f}-{values[-1]:.1f}"


def report(runs: list[dict[str, Any]]) -> None:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def nodes(run: dict[str, Any]) -> str:
        return f"{len(run['nodes'])}: " + " + ".join(str(n) for _, n in sorted(run["nodes"].items()))

    added = TO_REPLICAS - FROM_REPLICAS
    print(
        f"\nScale out: {FROM_REPLICAS} -> {TO_REPLICAS} replicas across nodes under load, layout PerReplica"
    )
    print("  seconds after `kubectl scale`; per milestone the last new pod's time (first-last new pod)")
    for run in runs:
        if run["done_s"] is None:
            print(f"  INCOMPLETE with {run['models']} models: the last replica did not serve every model")
    heading = "".join(f"{str(r['models']) + (' model' if r['models'] == 1 else ' models'):>24}" for r in runs)
    print(f"  {'':56}{heading}")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("load average (1 min) before / after", lambda r: f"{r['loadavg_before'][0]:.1f} / "
                                                          f"{r['loadavg_after'][0]:.1f}"),
        *((label, _milestone(key)) for key, label in MILESTONES.items()),
        ("copy complete -> every model READY, median per pod",
         lambda r: cell(_median_gap(r, "synced", "loaded"))),
        ("every TritonModel Ready, loaded 6/6", lambda r: cell(r["all_status_loaded_s"])),
        ("6 pods Ready, 6 addresses behind the Service", lambda r: cell(r["all_behind_service_s"])),
        ("last replica serves every model (both above)", lambda r: cell(r["done_s"])),
        ("nodes of the 6 pods (pods on gpu-node-0 + gpu-node-1)", nodes),
        ("requests through the Service: ok / failed",
         lambda r: f"{r['requests_ok']} / {r['requests_failed']}"),
        ("new replicas that answered load requests", lambda r: f"{r['new_pods_took_load']} of {added}"),
        ("one inference per model on each new replica: failed",
         lambda r: f"{r.get('infer_failures', '-')} of {added * r['models']}"),
    ]  # fmt: skip
    for what, value in rows:
        print(f"  {what:56}" + "".join(f"{value(r):>24}" for r in runs))
    for run in runs:
        if run["requests_failed"]:
            print(f"  FAILED REQUESTS with {run['models']} models: {run['requests_failed']}; the first:")
            for message in run["failures"]:
                print(f"    {message[:300]}")


def _milestone(key: str) -> Callable[[dict[str, Any]], str]:
    def value(run: dict[str, Any]) -> str:
        last = _last(run, key)
        return f"{'-' if last is None else f'{last:.1f}'} ({_spread(run, key)})"

    return value


def _median_gap(run: dict[str, Any], first: str, then: str) -> float | None:
    gaps = [p[then] - p[first] for p in run["new_pods"].values() if first in p and then in p]
    return statistics.median(gaps) if gaps else None
