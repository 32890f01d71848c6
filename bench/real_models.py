"""Real-models part of `make bench`: N real python-backend TritonModels on one real 2-replica TritonServer.

Everything is real: the operator, its staging Jobs (the pod runner runs this repository's staging
program, which reads the sandbox's S3), tritonserver in each pod (python backend, CPU; one stub
process per model instance). Each model is the smallest real one (adds one to a float), published
under its own prefix of the S3 bucket, as a team with many models publishes each of its own with
`model-builders publish`: one Secret serves them all, and no per-model digest has to be written into
the manifests (the HTTP source needs one) nor a second volume kept (the PVC source).

- storm: every model applied at once; from the apply until each model is READY in the repository
  index of every replica (pod IPs, sampled every second), then one real inference per model per
  replica; per-model percentiles;
- status staleness during the storm: at each sample, each model's `status.replicas` against the
  indexes: how long the status has been behind what the pods serve; and per model, from READY on
  every replica to `Ready=True` and `loaded: R/R` in status; after the storm, from one inference per
  replica to `status.metrics.successCount` showing it (`metrics.refreshedAt` moves only when figures
  do);
- the operator's RSS, CPU and threads during the storm and at rest; tritonserver's memory per pod (the
  process and its python stubs: RSS summed, and PSS, which shares library pages out fairly);
- staging Jobs at once (existing, active, their pods running, the staging programs and their RSS);
- API requests per object and status period at rest (audit log), and per model during the storm;
- scale 2 -> 4 replicas: until both new replicas have every model READY (and answer an inference).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.run import audit_counts, new_namespace, poll
from bench.scale import _proc_figures
from model_builders.publish import publish
from model_builders.targets import parse_target
from sandbox.mnist import ensure_bucket
from tests.e2e.conftest import OperatorProcess, Sandbox
from tests.golden.triton.triton_models import infer_once, write_model
from tests.support.objects import POD_SELECTOR

GROUP = ("tritonoperator.dev", "v1alpha1")
SERVER = "triton"
BUCKET = "models"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
STATUS_PERIOD_S = 10.0  # the operator's default
SAMPLE_S = 1.0
# Measured here (2 shared cores, tritonserver 2.51, the model below): one loaded instance costs 37-40 MB
# RSS (Triton's part plus its python stub process) and 18-22 MB PSS; an empty tritonserver 35 MB RSS.
# 4 replicas x 50 models: 8.1 GB RSS summed over processes (library pages counted once per process),
# 4.1 GB PSS: well under 8 GiB of real memory. 100 models would be 7-9 GB PSS at 4 replicas.
DEFAULT_MODELS = 50


def _now() -> float:
    return time.time()


def _model_name(i: int) -> str:
    return f"adder-{i:03d}"


def _tritonmodel(name: str, endpoint: str) -> dict[str, Any]:
    s3 = {
        "bucket": BUCKET,
        "prefix": f"real/{name}/1",
        "endpoint": endpoint,
        "region": "us-east-1",
        "credentialsSecret": {"name": "s3-credentials"},
    }
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": {"serverRef": {"name": SERVER}, "version": 1, "source": {"s3": s3}},
    }


def _tritonserver(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": SERVER},
        "spec": {
            "replicas": replicas,
            "resources": {"gpus": 1},
            "modelRepository": {"size": "2Gi", "retainOnDelete": False},
        },
    }


def _apply(sb: Sandbox, ns: str, objs: list[dict[str, Any]]) -> None:
    items = json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    sb.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=items)


def publish_models(endpoint: str, names: list[str], workdir: Path) -> None:
    """Each model built and published to s3://models/real/NAME/1 (in-process `model-builders publish`)."""
    os.environ.update(CREDENTIALS)  # boto3 reads them from the environment, as a user's shell would
    ensure_bucket(endpoint, CREDENTIALS)
    repo = workdir / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    for name in names:
        folder = write_model(repo, name, max_queue_delay_us=0)
        target = parse_target(f"s3://{BUCKET}/real/{name}/1")
        publish(folder, target, endpoint_url=endpoint, region="us-east-1", force=True, version=1)


# -- what the pods serve, what status says ------------------------------------------------------------


def _ready_in_index(ip: str) -> set[str] | None:
    """Models READY in one pod's repository index; None if the pod does not answer."""
    req = urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return {m["name"] for m in json.load(resp) if m.get("state") == "READY"}
    except OSError:
        return None


def _server_pods(core: client.CoreV1Api, ns: str) -> list[Any]:
    """The Triton pods (not the repository server's pod of layout PerReplica: another component)."""
    pods = core.list_namespaced_pod(ns, label_selector=POD_SELECTOR).items
    return [p for p in pods if not p.metadata.deletion_timestamp and p.status.pod_ip]


def _models(sb: Sandbox, ns: str) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(sb.api)
    return list(api.list_namespaced_custom_object(*GROUP, ns, "tritonmodels", _request_timeout=30)["items"])


def _status_ready(obj: dict[str, Any], replicas: int) -> bool:
    status = obj.get("status") or {}
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    return bool(
        ready.get("status") == "True"
        and ready.get("observedGeneration") == obj["metadata"]["generation"]
        and status.get("loaded") == f"{replicas}/{replicas}"
    )


def _status_view(obj: dict[str, Any]) -> frozenset[str]:
    """The pods the status says serve the model (READY)."""
    replicas = (obj.get("status") or {}).get("replicas") or []
    return frozenset(r["pod"] for r in replicas if r.get("state") == "READY")


# -- process figures ----------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    """Each process's children, from one pass over /proc."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.setdefault(int(stat[1]), []).append(int(entry.name))
    return out


def _tree_memory(pid: int, children: dict[int, list[int]] | None = None) -> tuple[float, float, int]:
    """(RSS MB summed, PSS MB summed, processes) of a process and all its descendants."""
    children = _children_map() if children is None else children
    rss = pss = 0
    count = 0
    todo = [pid]
    while todo and count < 10_000:
        current = todo.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}
        rss, pss, count = rss + fields.get("Rss", 0), pss + fields.get("Pss", 0), count + 1
        todo.extend(children.get(current, []))
    return rss / 1024, pss / 1024, count


def _own_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def _sandbox_processes(netns: str) -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of every process in this sandbox's network namespace (pod IPs repeat across sandboxes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") != netns:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        out.append((int(entry.name), argv))
    return out


def _tritonserver_pid(ip: str, processes: list[tuple[int, list[bytes]]]) -> int | None:
    """The tritonserver the pod runner started for the pod with this IP (it binds the pod IP)."""
    needle = f"--http-address={ip}".encode()
    return next(
        (pid for pid, argv in processes if argv[0].endswith(b"tritonserver") and needle in argv), None
    )


def _staging_processes(processes: list[tuple[int, list[bytes]]]) -> tuple[int, float]:
    """(count, RSS MB summed) of the staging programs running (`triton-operator stage`)."""
    pids = [
        pid
        for pid, argv in processes
        if b"stage" in argv and any(w.endswith(b"triton-operator") for w in argv)
    ]
    children = _children_map()
    return len(pids), sum(_tree_memory(pid, children)[0] for pid in pids)


def _pod_memory(pods: list[Any]) -> dict[str, tuple[float, float, int]]:
    out = {}
    processes, children = _sandbox_processes(_own_netns()), _children_map()
    for pod in pods:
        pid = _tritonserver_pid(pod.status.pod_ip, processes)
        if pid is not None:
            out[pod.metadata.name] = _tree_memory(pid, children)
    return out


# -- the storm's sampler ------------------------------------------------------------------------------


@dataclass
class StormLog:
    """What the sampler saw, each model by name."""

    start: float
    served_everywhere: dict[str, float] = field(default_factory=dict)  # READY in every replica's index
    status_ready: dict[str, float] = field(default_factory=dict)  # Ready=True, loaded R/R in status
    truth: dict[str, frozenset[str]] = field(default_factory=dict)
    truth_since: dict[str, float] = field(default_factory=dict)
    behind_ages: list[float] = field(default_factory=list)  # each (sample, model behind): seconds
    behind_counts: list[int] = field(default_factory=list)
    max_jobs: int = 0
    max_active_jobs: int = 0
    max_staging_pods_running: int = 0
    max_staging_processes: int = 0
    max_staging_rss_mb: float = 0.0
    jobs_seen: set[str] = field(default_factory=set)
    max_rss_mb: float = 0.0
    max_threads: int = 0
    max_pod_pss_mb: float = 0.0
    samples: int = 0


def _sample(sb: Sandbox, ns: str, names: set[str], replicas: int, log: StormLog, operator_pid: int) -> None:
    core, batch = client.CoreV1Api(sb.api), client.BatchV1Api(sb.api)
    at = _now()
    pods = _server_pods(core, ns)
    indexes = {p.metadata.name: _ready_in_index(p.status.pod_ip) for p in pods}
    objs = [o for o in _models(sb, ns) if o["metadata"]["name"] in names]
    jobs = batch.list_namespaced_job(ns).items
    log.max_jobs = max(log.max_jobs, len(jobs))
    log.max_active_jobs = max(log.max_active_jobs, sum(1 for j in jobs if (j.status.active or 0) > 0))
    log.jobs_seen |= {j.metadata.name for j in jobs}
    staging = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=staging").items
    running = sum(1 for p in staging if p.status.phase == "Running")
    log.max_staging_pods_running = max(log.max_staging_pods_running, running)
    count, staging_rss = _staging_processes(_sandbox_processes(_own_netns()))
    log.max_staging_processes = max(log.max_staging_processes, count)
    log.max_staging_rss_mb = max(log.max_staging_rss_mb, staging_rss)
    rss, threads, _ = _proc_figures(operator_pid)
    log.max_rss_mb, log.max_threads = max(log.max_rss_mb, rss), max(log.max_threads, threads)
    behind = 0
    for obj in objs:
        name = obj["metadata"]["name"]
        truth = frozenset(pod for pod, ready in indexes.items() if ready is not None and name in ready)
        if log.truth.get(name) != truth:
            log.truth[name], log.truth_since[name] = truth, at
        if len(truth) == replicas == len(pods) and name not in log.served_everywhere:
            log.served_everywhere[name] = at
        if _status_ready(obj, replicas) and name not in log.status_ready:
            log.status_ready[name] = at
        if _status_view(obj) != truth:
            behind += 1
            log.behind_ages.append(at - log.truth_since[name])
    log.behind_counts.append(behind)
    log.samples += 1


def _sampler(
    sb: Sandbox,
    ns: str,
    names: set[str],
    replicas: int,
    log: StormLog,
    operator_pid: int,
    done: threading.Event,
    deadline_s: float,
) -> None:
    while not done.is_set() and _now() - log.start < deadline_s:
        began = _now()
        # A sample lost to a busy apiserver or pod is skipped; the next one counts.
        with contextlib.suppress(ApiException, OSError, ValueError):
            _sample(sb, ns, names, replicas, log, operator_pid)
        if len(log.served_everywhere) == len(names) and len(log.status_ready) == len(names):
            done.set()
        done.wait(max(0.0, SAMPLE_S - (_now() - began)))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "max": float("nan")}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {"p50": statistics.median(ordered), "p90": p90, "max": ordered[-1]}


def _infer_everywhere(pods: list[Any], names: list[str]) -> tuple[int, dict[str, float]]:
    """One real inference of every model on every pod: (failures, when each model's last one returned)."""
    failures = 0
    sent: dict[str, float] = {}
    for name in names:
        for pod in pods:
            if infer_once(f"{pod.status.pod_ip}:8000", name) is not None:
                failures += 1
        sent[name] = _now()
    return failures, sent


def _metrics_catch_up(sb: Sandbox, ns: str, sent: dict[str, float], per_model: int) -> dict[str, float]:
    """Per model: seconds from its inferences until status.metrics.successCount counts them all."""
    seen: dict[str, float] = {}
    deadline = _now() + 6 * STATUS_PERIOD_S
    while len(seen) < len(sent) and _now() < deadline:
        for obj in _models(sb, ns):
            name = obj["metadata"]["name"]
            metrics = (obj.get("status") or {}).get("metrics") or {}
            if name in sent and name not in seen and (metrics.get("successCount") or 0) >= per_model:
                seen[name] = _now() - sent[name]
        time.sleep(0.5)
    return seen


def _at_rest(sb: Sandbox, pid: int, rest_s: float, objects: int, prefix: str) -> dict[str, float]:
    """The operator over `rest_s` of nothing changing: CPU, RSS, threads, API requests (audit log)."""
    offset = sb.cfg.audit_log.stat().st_size
    _, _, cpu_before = _proc_figures(pid)
    time.sleep(rest_s)
    rss, threads, cpu_after = _proc_figures(pid)
    counts, _ = audit_counts(sb.cfg.audit_log, offset)
    periods = rest_s / STATUS_PERIOD_S
    return {
        f"{prefix}_operator_rss_mb": rss,
        f"{prefix}_operator_threads": threads,
        f"{prefix}_operator_cpu_percent": 100 * (cpu_after - cpu_before) / rest_s,
        f"{prefix}_reads_per_min": counts["read"] * 60 / rest_s,
        f"{prefix}_writes_per_min": counts["write"] * 60 / rest_s,
        f"{prefix}_requests_per_object_per_period": (counts["read"] + counts["write"]) / periods / objects,
    }


# -- the whole part -----------------------------------------------------------------------------------


def run_real_models_bench(
    sb: Sandbox, log_dir: Path, *, models: int = DEFAULT_MODELS, rest_s: float = 60
) -> dict[str, Any]:
    core = client.CoreV1Api(sb.api)
    custom = client.CustomObjectsApi(sb.api)
    names = [_model_name(i) for i in range(models)]
    publish_models(sb.cfg.s3_endpoint, names, log_dir / "real-models")
    operator = OperatorProcess(sb, log_dir / "real-models-operator.log", status_period_s=STATUS_PERIOD_S)
    operator.start()
    assert operator.proc is not None
    pid = operator.proc.pid
    figures: dict[str, Any] = {"models": models, "loadavg_before": os.getloadavg()}

    def save() -> None:  # after each phase: what was measured survives a later failure
        (log_dir / "real-models.json").write_text(json.dumps(figures, indent=2, default=str))

    ns = new_namespace(core)
    try:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
                  "stringData": CREDENTIALS}  # fmt: skip
        _apply(sb, ns, [secret, _tritonserver(2)])
        sb.kubectl("wait", "-n", ns, f"tritonserver/{SERVER}", "--for=condition=Ready", "--timeout=300s")
        pods = _server_pods(core, ns)
        figures["empty_pod_memory"] = _pod_memory(pods)
        time.sleep(5)

        # -- the storm ------------------------------------------------------------------------------
        offset = sb.cfg.audit_log.stat().st_size
        _, _, cpu_before = _proc_figures(pid)
        log = StormLog(start=_now())
        done = threading.Event()
        deadline_s = 300 + 12 * models  # generous: 2 shared cores
        sampler = threading.Thread(
            target=_sampler, args=(sb, ns, set(names), 2, log, pid, done, deadline_s), daemon=True
        )
        _apply(sb, ns, [_tritonmodel(n, sb.cfg.s3_endpoint) for n in names])
        figures["storm_applied_s"] = _now() - log.start
        sampler.start()
        peak_pod: dict[str, tuple[float, float, int]] = {}
        while sampler.is_alive():
            sampler.join(timeout=5)
            for pod, mem in _pod_memory(_server_pods(core, ns)).items():
                if mem[1] > peak_pod.get(pod, (0.0, 0.0, 0))[1]:
                    peak_pod[pod] = mem
        storm_s = _now() - log.start
        _, _, cpu_after = _proc_figures(pid)
        counts, _ = audit_counts(sb.cfg.audit_log, offset)
        if len(log.served_everywhere) < models or len(log.status_ready) < models:
            figures["storm_incomplete"] = {
                "served_everywhere": len(log.served_everywhere),
                "status_ready": len(log.status_ready),
            }
        served = [t - log.start for t in log.served_everywhere.values()]
        status_lag = [
            log.status_ready[m] - t for m, t in log.served_everywhere.items() if m in log.status_ready
        ]
        figures |= {
            "storm_all_served_s": max(served) if served else float("nan"),
            "storm_all_status_ready_s": max(log.status_ready.values()) - log.start if log.status_ready else 0,
            "storm_per_model_s": _percentiles(served),
            "storm_status_lag_s": _percentiles(status_lag),
            "storm_behind_age_s": _percentiles(log.behind_ages),
            "storm_max_models_behind": max(log.behind_counts, default=0),
            "storm_samples": log.samples,
            "storm_operator_cpu_percent": 100 * (cpu_after - cpu_before) / storm_s,
            "storm_operator_max_rss_mb": log.max_rss_mb,
            "storm_operator_max_threads": log.max_threads,
            "storm_max_jobs": log.max_jobs,
            "storm_max_active_jobs": log.max_active_jobs,
            "storm_max_staging_pods_running": log.max_staging_pods_running,
            "storm_jobs_seen": len(log.jobs_seen),
            "storm_max_staging_processes": log.max_staging_processes,
            "storm_max_staging_rss_mb": log.max_staging_rss_mb,
            "storm_reads_per_model": counts["read"] / models,
            "storm_writes_per_model": counts["write"] / models,
            "storm_peak_pod_memory": peak_pod,
            "loadavg_storm": os.getloadavg(),
        }
        save()

        # -- at rest, no model ever served a request; then one inference each, and at rest again ----
        time.sleep(2 * STATUS_PERIOD_S)  # the last status writes land
        figures |= _at_rest(sb, pid, rest_s, models + 1, "rest")
        pods = _server_pods(core, ns)
        figures["rest_pod_memory"] = _pod_memory(pods)
        failures, sent = _infer_everywhere(pods, names)
        figures["storm_infer_failures"] = failures
        lag = _metrics_catch_up(sb, ns, sent, len(pods))
        figures["metrics_lag_s"] = _percentiles(list(lag.values()))
        figures["metrics_lag_missing"] = models - len(lag)
        time.sleep(2 * STATUS_PERIOD_S)  # the rates of that window are back to 0
        figures |= _at_rest(sb, pid, rest_s, models + 1, "served")
        save()

        # -- scale 2 -> 4 ---------------------------------------------------------------------------
        old = {p.metadata.name for p in pods}
        start = _now()
        patch = {"spec": {"replicas": 4}}
        custom.patch_namespaced_custom_object(*GROUP, ns, "tritonservers", SERVER, patch)
        new_up: dict[str, float] = {}  # tritonserver answers (its repository index)
        new_ready: dict[str, float] = {}  # the pod's Ready condition

        def new_pods_serve_all() -> bool:
            fresh = [p for p in _server_pods(core, ns) if p.metadata.name not in old]
            indexes = []
            for pod in fresh:
                ready = pod.status.conditions and any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions
                )
                if ready and pod.metadata.name not in new_ready:
                    new_ready[pod.metadata.name] = _now() - start
                indexes.append(_ready_in_index(pod.status.pod_ip))
                if indexes[-1] is not None and pod.metadata.name not in new_up:
                    new_up[pod.metadata.name] = _now() - start
            return len(fresh) == 2 and all(ix is not None and ix >= set(names) for ix in indexes)

        figures["scale_new_serve_all_s"] = poll(new_pods_serve_all, 300 + 6 * models, "both new replicas")
        for _ in range(240):  # the pods' Ready condition may follow their loads: bounded, 2 min
            if len(new_ready) == 2:
                break
            new_pods_serve_all()
            time.sleep(0.5)
        figures["scale_new_pods_up_s"] = sorted(new_up.values())
        figures["scale_new_pods_ready_s"] = sorted(new_ready.values())
        poll(lambda: all(_status_ready(o, 4) for o in _models(sb, ns)), 300, "every model: loaded 4/4")
        figures["scale_status_all_4_of_4_s"] = _now() - start
        fresh = [p for p in _server_pods(core, ns) if p.metadata.name not in old]
        figures["scale_infer_failures"], _ = _infer_everywhere(fresh, names)
        figures["scaled_pod_memory"] = _pod_memory(_server_pods(core, ns))
        figures["operator_rss_after_mb"], figures["operator_threads_after"], _ = _proc_figures(pid)

        sb.kubectl("delete", "-n", ns, "tritonmodels", "--all", "--wait=false")
        save()
        poll(lambda: not _models(sb, ns), 300, "every model's finalizer done")
    finally:
        core.delete_namespace(ns)
        poll(lambda: ns not in {n.metadata.name for n in core.list_namespace().items}, 300, "the namespace")
        operator.stop()
    save()
    return figures


def report(figures: dict[str, Any]) -> None:
    f = figures
    n = f["models"]

    def pct(key: str) -> str:
        p = f[key]
        return f"p50 {p['p50']:.1f} / p90 {p['p90']:.1f} / max {p['max']:.1f} s"

    def seconds(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values) + " s" if values else "-"

    def memory(key: str) -> str:
        pods = f[key].values()
        return ", ".join(f"{rss:.0f}/{pss:.0f}" for rss, pss, _ in pods) + " MB (RSS/PSS per pod)"

    print(f"\nReal models: {n} python-backend TritonModels (S3) on one TritonServer, 2 replicas, then 4")
    if "storm_incomplete" in f:
        print(f"  STORM INCOMPLETE: {f['storm_incomplete']}")
    avg, storm_cpu = f["loadavg_before"][0], f["storm_operator_cpu_percent"]
    empty, full = list(f["empty_pod_memory"].values()), list(f["rest_pod_memory"].values())
    per_model = [
        statistics.mean(full[i][k] for i in range(len(full))) / n
        - statistics.mean(empty[i][k] for i in range(len(empty))) / n
        for k in (0, 1)
    ]
    rows = [
        ("load average (1 min) before / at the storm's end", f"{avg:.1f} / {f['loadavg_storm'][0]:.1f}"),
        ("apply of all models", f"{f['storm_applied_s']:.1f} s"),
        ("storm: every model READY on both replicas", f"{f['storm_all_served_s']:.1f} s"),
        ("storm: per model", pct("storm_per_model_s")),
        ("storm: every model Ready, loaded 2/2 in status", f"{f['storm_all_status_ready_s']:.1f} s"),
        ("status lag: served everywhere -> Ready in status", pct("storm_status_lag_s")),
        ("status behind the pods (per sample and model)", pct("storm_behind_age_s")),
        ("models whose status was behind, at most", f"{f['storm_max_models_behind']} of {n}"),
        ("one inference per replica -> metrics.successCount", pct("metrics_lag_s")),
        ("inferences failed after the storm", f"{f['storm_infer_failures']} of {2 * n}"),
        (
            "staging Jobs at once: existing / active / pods running",
            f"{f['storm_max_jobs']} / {f['storm_max_active_jobs']} / {f['storm_max_staging_pods_running']}",
        ),
        (
            "staging programs at once / their RSS summed, at most",
            f"{f['storm_max_staging_processes']} / {f['storm_max_staging_rss_mb']:.0f} MB",
        ),
        (
            "storm: operator CPU / max RSS / max threads",
            f"{storm_cpu:.0f} % / {f['storm_operator_max_rss_mb']:.0f} MB / "
            f"{f['storm_operator_max_threads']}",
        ),
        (
            "storm: API reads / writes per model",
            f"{f['storm_reads_per_model']:.1f} / {f['storm_writes_per_model']:.1f}",
        ),
        *_rest_rows(f, "rest", "at rest, no traffic yet"),
        *_rest_rows(f, "served", "at rest, after one request each"),
        ("tritonserver, empty", memory("empty_pod_memory")),
        (f"tritonserver, {n} models", memory("rest_pod_memory")),
        ("tritonserver, per model", f"{per_model[0]:.1f} MB RSS / {per_model[1]:.1f} MB PSS"),
        ("tritonserver, peak during the storm", memory("storm_peak_pod_memory")),
        ("tritonserver, 4 replicas", memory("scaled_pod_memory")),
        ("scale 2 -> 4: new pods' tritonserver answers", seconds(f["scale_new_pods_up_s"])),
        ("scale 2 -> 4: new pods Ready (condition)", seconds(f["scale_new_pods_ready_s"])),
        ("scale 2 -> 4: both new replicas serve every model", f"{f['scale_new_serve_all_s']:.1f} s"),
        ("scale 2 -> 4: every model loaded 4/4 in status", f"{f['scale_status_all_4_of_4_s']:.1f} s"),
        ("inferences failed on the new replicas", f"{f['scale_infer_failures']} of {2 * n}"),
        (
            "operator RSS / threads after",
            f"{f['operator_rss_after_mb']:.0f} MB / {f['operator_threads_after']}",
        ),
    ]
    for what, value in rows:
        print(f"  {what:62}{value:>40}")


def _rest_rows(f: dict[str, Any], prefix: str, label: str) -> list[tuple[str, str]]:
    cpu, rss, threads = (f[f"{prefix}_operator_{k}"] for k in ("cpu_percent", "rss_mb", "threads"))
    reads, writes = f[f"{prefix}_reads_per_min"], f[f"{prefix}_writes_per_min"]
    return [
        (f"{label}: operator CPU / RSS / threads", f"{cpu:.1f} % / {rss:.0f} MB / {threads}"),
        (f"{label}: API reads / writes per minute", f"{reads:.0f} / {writes:.0f}"),
        (f"{label}: requests per object per period", f"{f[f'{prefix}_requests_per_object_per_period']:.2f}"),
    ]
