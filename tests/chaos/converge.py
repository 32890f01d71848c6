"""What "converged" means after a fault: the invariants, each a check with one clear message.

`problems(...)` lists every invariant that does not hold right now (empty: converged); `wait_converged`
polls it (bounded) and returns what still failed at the bound.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.chaos.faults import runner_pods
from tests.chaos.points import GROUP, VERSION, Observed, observe
from tests.e2e import kube
from tests.e2e.conftest import Sandbox

TEMP_PREFIXES = (".staging-", ".trash-")  # operator/triton_operator/staging/place.py
MARKER = ".staged.json"
SERVER_SELECTOR = "app.kubernetes.io/instance=triton,app.kubernetes.io/component=server"
CLAIM = "triton-models"


@dataclass(frozen=True)
class Expect:
    """The state a fault-free run of the scenario ends in."""

    model: str
    model_present: bool = True
    ready: str = "True"  # the model's Ready status ("True", "False", or "" for not checked)
    ready_reason: str | None = None  # when set, Ready's reason too
    versions: frozenset[str] = frozenset({"1"})  # READY versions of <model>~versions on every replica
    # Versions that may be READY too (a rolled-back canary held at weight 0 by a fault-free run).
    may_stay: frozenset[str] = frozenset()
    phase: str | None = None  # status.rollout.phase
    server_present: bool = True
    replicas: int = 2


def _cond(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    return next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {}
    )


def _generation_problems(kind: str, obj: dict[str, Any]) -> list[str]:
    gen, seen = obj["metadata"].get("generation"), (obj.get("status") or {}).get("observedGeneration")
    return [] if gen == seen else [f"{kind}: observedGeneration {seen} is not the generation {gen}"]


def repository_index(ip: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return list(json.load(resp))


def model_ready(ip: str, model: str) -> bool:
    """GET /v2/models/<model>/ready: 200 when Triton serves it."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8000/v2/models/{model}/ready", timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def _object_problems(o: Observed, e: Expect) -> list[str]:
    out: list[str] = []
    if e.server_present:
        if o.server is None:
            out.append("server: TritonServer triton is gone but the spec wants it")
        else:
            if _cond(o.server, "Ready").get("status") != "True":
                out.append(f"server: Ready is {_cond(o.server, 'Ready')!r}, not True")
            out += _generation_problems("server", o.server)
    elif o.server is not None:
        fin = o.server["metadata"].get("finalizers")
        out.append(f"server: TritonServer triton still exists after its deletion (finalizers {fin})")
    if e.model_present:
        if o.model is None:
            out.append(f"model: TritonModel {e.model} is gone but the spec wants it")
            return out
        ready = o.condition("Ready")
        if e.ready and ready.get("status") != e.ready:
            out.append(
                f"model: Ready is {ready.get('status')} ({ready.get('reason')}: {ready.get('message')}), "
                f"not {e.ready}"
            )
        if e.ready_reason and ready.get("reason") != e.ready_reason:
            out.append(f"model: Ready's reason is {ready.get('reason')}, not {e.ready_reason}")
        if e.phase and o.rollout.get("phase") != e.phase:
            out.append(f"model: rollout phase is {o.rollout.get('phase')}, not {e.phase}")
        out += _generation_problems("model", o.model)
    elif o.model is not None:
        fin = o.model["metadata"].get("finalizers")
        out.append(f"model: TritonModel {e.model} still exists after its deletion (finalizers {fin})")
    return out


def _orphan_problems(sb: Sandbox, ns: str, o: Observed, e: Expect) -> list[str]:
    out: list[str] = []
    core, batch, apps = client.CoreV1Api(sb.api), client.BatchV1Api(sb.api), client.AppsV1Api(sb.api)
    jobs = {j.metadata.name: j for j in batch.list_namespaced_job(ns).items}
    for j in o.jobs:
        if not (j.status.succeeded or j.status.failed):
            out.append(f"jobs: staging Job {j.metadata.name} is still not complete")
        labels = j.metadata.labels or {}
        if not e.model_present and labels.get(f"{GROUP}/model") == e.model:
            out.append(f"jobs: staging Job {j.metadata.name} of the deleted model is left")
    replicasets = {r.metadata.name for r in apps.list_namespaced_replica_set(ns).items}
    pods = core.list_namespaced_pod(ns).items
    names = {p.metadata.name for p in pods}
    for p in pods:
        for ref in p.metadata.owner_references or []:
            gone = (ref.kind == "Job" and ref.name not in jobs) or (
                ref.kind == "ReplicaSet" and ref.name not in replicasets
            )
            if gone:
                out.append(f"pods: pod {p.metadata.name} is left without its {ref.kind} {ref.name}")
        if p.metadata.deletion_timestamp:
            out.append(f"pods: pod {p.metadata.name} is still terminating")
    for rp in runner_pods(sb, ns):
        if rp["name"] not in names and any(c["pid"] for c in rp["containers"]):
            out.append(
                f"pods: the runner still runs a process of pod {rp['name']}, which the API no longer has"
            )
    server_pods = [
        p for p in pods if (p.metadata.labels or {}).get("app.kubernetes.io/component") == "server"
    ]
    if e.server_present:
        ready = kube.ready_pods(core, ns, SERVER_SELECTOR)
        if len(ready) != e.replicas or len(server_pods) != e.replicas:
            out.append(f"pods: {len(ready)} ready of {len(server_pods)} server pods, not {e.replicas}")
    elif server_pods:
        out.append(f"pods: {len(server_pods)} server pods left after the server's deletion")
    return out


def pvc_problems(folder: Path, model: str, model_present: bool) -> list[str]:
    """No temp or trash folder, every staged version complete (its marker written last is there), and a
    deleted model's folders gone (the chaos models have keepFilesOnDelete false)."""
    out: list[str] = []
    if not folder.is_dir():
        return out
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(TEMP_PREFIXES):
            out.append(f"pvc: temp folder {entry.name} left in the model repository")
    versions = folder / f"{model}~versions"
    if not model_present:
        for left in (versions, folder / model):
            if left.exists():
                out.append(f"pvc: {left.name} of the deleted model is still in the repository")
    elif versions.is_dir():
        for v in sorted(versions.iterdir()):
            if v.is_dir() and v.name.isdigit() and not (v / MARKER).is_file():
                out.append(f"pvc: {versions.name}/{v.name} is half-written (no {MARKER})")
    return out


def _loaded_problems(sb: Sandbox, ns: str, e: Expect) -> list[str]:
    out: list[str] = []
    target = f"{e.model}~versions"
    for pod in kube.ready_pods(client.CoreV1Api(sb.api), ns, SERVER_SELECTOR):
        ip = pod.status.pod_ip
        rows = repository_index(ip)
        ready = {str(r.get("version")) for r in rows if r["name"] == target and r.get("state") == "READY"}
        router = model_ready(ip, e.model)  # loaded from a request's files: not in the index
        want = set(e.versions) if e.model_present else set()
        if not (want <= ready <= want | set(e.may_stay)):
            out.append(
                f"triton: {pod.metadata.name} has versions {sorted(ready)} of {target} READY, "
                f"not {sorted(want)}"
            )
        if router != e.model_present:
            out.append(
                f"triton: {pod.metadata.name} router {e.model} READY is {router}, not {e.model_present}"
            )
    return out


def problems(sb: Sandbox, ns: str, e: Expect) -> list[str]:
    try:
        o = observe(sb, ns, e.model)
        out = _object_problems(o, e)
        out += _orphan_problems(sb, ns, o, e)
        if e.server_present:
            try:
                folder = kube.pv_folder(client.CoreV1Api(sb.api), ns, CLAIM)
            except ApiException:
                folder = Path("/nonexistent")
                out.append(f"pvc: claim {CLAIM} not found")
            if not [j for j in o.jobs if not (j.status.succeeded or j.status.failed)]:
                out += pvc_problems(folder, e.model, e.model_present)
            out += _loaded_problems(sb, ns, e)
        for plural in ("tritonmodels", "tritonservers"):
            for obj in client.CustomObjectsApi(sb.api).list_namespaced_custom_object(
                GROUP, VERSION, ns, plural
            )["items"]:
                if obj["metadata"].get("deletionTimestamp"):
                    fin = obj["metadata"].get("finalizers")
                    out.append(f"finalizers: {plural}/{obj['metadata']['name']} is deleted but kept by {fin}")
    except Exception as exc:  # not converged while the cluster does not even answer
        return [f"cluster: {type(exc).__name__}: {exc}"]
    return sorted(set(out))


def wait_converged(sb: Sandbox, ns: str, e: Expect, bound_s: float) -> tuple[float, list[str]]:
    """(seconds it took, []) once every invariant holds twice in a row 1 s apart; (bound, what still
    fails) when they do not within `bound_s`."""
    start = time.monotonic()
    last: list[str] = ["not checked yet"]
    held = 0
    while time.monotonic() - start < bound_s:
        last = problems(sb, ns, e)
        held = held + 1 if not last else 0
        if held >= 2:
            return time.monotonic() - start, []
        time.sleep(1.0)
    return bound_s, last


@dataclass
class StepHistory:
    """Every distinct (phase, canaryVersion, stepIndex, stepStartedAt) of the model's status.rollout,
    polled every 0.2 s from a thread (bounded); `problems` says whether a step was skipped or repeated."""

    sb: Sandbox
    ns: str
    model: str
    seen: list[tuple[str, str, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> StepHistory:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"steps-{self.ns}")
        self._thread.start()
        return self

    def _run(self) -> None:
        custom = client.CustomObjectsApi(self.sb.api)
        deadline = time.monotonic() + 900
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                obj = cast(
                    dict[str, Any],
                    custom.get_namespaced_custom_object(
                        GROUP, VERSION, self.ns, "tritonmodels", self.model, _request_timeout=5
                    ),
                )
                r = (obj.get("status") or {}).get("rollout") or {}
                entry = (
                    str(r.get("phase")),
                    str(r.get("canaryVersion")),
                    int(r.get("stepIndex") or 0),
                    str(r.get("stepStartedAt")),
                )
                if r and (not self.seen or self.seen[-1] != entry):
                    self.seen.append(entry)
            except Exception:  # an outage: nothing to record
                pass
            self._stop.wait(0.2)

    def stop(self) -> list[tuple[str, str, int, str]]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        return self.seen

    def problems(self, canary: str, steps: int, promoted: bool) -> list[str]:
        return step_problems(self.seen, canary, steps, promoted)


def step_problems(
    seen: list[tuple[str, str, int, str]], canary: str, steps: int, promoted: bool
) -> list[str]:
    """Steps of the canary's rollout in the order seen: each one started once (one stepStartedAt), none
    skipped (0, 1, 2, ... with no gap), all of them before a promotion."""
    out: list[str] = []
    started: dict[int, str] = {}
    order: list[int] = []
    for phase, version, index, at in seen:
        if phase != "Progressing" or version != canary:
            continue
        if index in started and started[index] != at:
            out.append(f"rollout: step {index + 1} started again ({started[index]} then {at})")
        started.setdefault(index, at)
        if not order or order[-1] != index:
            order.append(index)
    for a, b in itertools.pairwise(order):
        if b != a + 1:
            out.append(
                f"rollout: went from step {a + 1} to step {b + 1}" + (" (skipped)" if b > a else " (back)")
            )
    if order and order[0] != 0:
        out.append(f"rollout: the first step seen was step {order[0] + 1}")
    if promoted and sorted(set(order)) != list(range(steps)):
        out.append(f"rollout: promoted after steps {[i + 1 for i in order]}, not all {steps}")
    return out
