"""One in-memory Kubernetes for whole operator passes without a cluster (issue 18, point 5).

`FakeKube` is the operator's `Kube` (kube/rest.py) over a dict of objects, with the API server's
semantics a pass depends on: resourceVersion on every write, generation bumped only by a spec change,
status only through its subresource (apply ignores it), label selectors, owner references with
background garbage collection, and a record of every write (`calls`) so a test counts the Jobs a pass
created. It also plays the controllers a pass waits on, one explicit step at a time: the Job controller
(`complete_job`, `fail_job`), the Deployment controller (`sync_deployment`, `roll_deployment`) and the
kubelet (`start_pod`, `restart_container`; Ready follows ContainersReady and the readiness gates).
Watchers (`watch`) get every change as (event type, object), as kopf's watch streams would.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from triton_operator.kube.rest import KINDS, Kube
from triton_operator.reconcile.watched import JOB_NAME_LABEL
from triton_operator.render.server import CONTAINER_NAME

Obj = dict[str, Any]
Names = list[str]
Objs = list[Obj]  # (a class with a `list` method cannot say list[...] in its body)
Key = tuple[str, str, str]  # (kind, namespace, name)
Watcher = Callable[[str, Obj], None]
Selector = list[Callable[[Mapping[str, str]], bool]]


@dataclass(frozen=True)
class Call:
    """One write the operator made: `verb` is apply (create or update), status, condition or delete."""

    verb: str
    kind: str
    name: str
    created: bool = False


def parse_selector(selector: str | None) -> Selector:
    """A label selector's requirements (=, ==, !=, in, notin, exists, !exists) as predicates."""
    tests: Selector = []
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector or ""):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := re.fullmatch(r"([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)", term):
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            absent, key = m.group(1) == "!", m.group(2)
            tests.append(lambda labels, k=key, a=absent: (k in labels) != a)
        else:
            raise ValueError(f"unsupported label selector term {term!r} in {selector!r}")
    return tests


def matches(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    return all(test(labels or {}) for test in parse_selector(selector))


def _merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> Obj:
    """RFC 7386 JSON merge patch: None removes a key, dicts merge, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _body(obj: Mapping[str, Any]) -> Obj:
    """Everything but metadata and status: what a change of bumps the generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(kind: str, name: str) -> ApiException:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = json.dumps({"message": f'{kind} "{name}" not found', "reason": "NotFound", "code": 404})
    return exc


def condition_of(obj: Mapping[str, Any], ctype: str) -> Obj | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None
    )


class FakeKube(Kube):
    """The `Kube` interface in memory (see the module doc). `now` gives the API server's clock."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        # No API client: a method this fake does not implement fails loudly in `_call`.
        self.now = now
        self.objects: dict[Key, Obj] = {}
        self.calls: list[Call] = []
        self.watchers: list[Watcher] = []
        self.served: dict[str, Names] = {}  # group version -> resources (discovery)
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    def _call(self, method: str, path: str, **_: Any) -> Any:
        raise NotImplementedError(
            f"FakeKube does not serve {method} {path}: add it to tests/support/fakekube.py"
        )

    # -- the Kube interface ---------------------------------------------------------------------------
    def served_resources(self, group_version: str) -> Names | None:
        return self.served.get(group_version)

    def may(self, attributes: Mapping[str, str]) -> bool:
        return True

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        tests = parse_selector(label_selector)
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind
            and (namespace is None or ns == namespace)
            and all(t(obj["metadata"].get("labels") or {}) for t in tests)
        ]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (force): creates, or takes the applied fields over; status is ignored."""
        kind, meta = obj["kind"], obj["metadata"]
        if kind not in KINDS:
            raise NotImplementedError(f"FakeKube: unknown kind {kind}")
        key = (kind, meta.get("namespace") or "", meta["name"])
        old = self.objects.get(key)
        applied = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
        if old is None:
            self.calls.append(Call("apply", kind, meta["name"], created=True))
            return self.add(applied, record=False)
        self.calls.append(Call("apply", kind, meta["name"]))
        new = {**old, **{k: v for k, v in applied.items() if k != "metadata"}}
        new_meta = dict(old["metadata"])
        for field in ("labels", "annotations"):
            if field in meta:
                new_meta[field] = {**(old["metadata"].get(field) or {}), **meta[field]}
        if "ownerReferences" in meta:
            new_meta["ownerReferences"] = copy.deepcopy(meta["ownerReferences"])
        new["metadata"] = new_meta
        return self._store(key, new, old)

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource (generation never moves)."""
        key = (kind, namespace, name)
        old = self.objects.get(key)
        if old is None:
            raise _not_found(kind, name)
        self.calls.append(Call("status", kind, name))
        new = {**old, "status": _merge_patch(old.get("status") or {}, status)}
        return self._store(key, new, old)

    def patch_pod_condition(self, namespace: str, name: str, condition: Mapping[str, Any]) -> None:
        """One pod condition set by type (strategic merge); Ready follows, as the kubelet computes it."""
        key = ("Pod", namespace, name)
        old = self.objects.get(key)
        if old is None:
            raise _not_found("Pod", name)
        self.calls.append(Call("condition", "Pod", name))
        new = copy.deepcopy(old)
        self._set_condition(new, dict(condition))
        self._store(key, new, old)

    def create(self, kind: str, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST: a new object (409 when it exists)."""
        self.calls.append(Call("create", kind, obj["metadata"]["name"], created=True))
        new = {"kind": kind, **copy.deepcopy(dict(obj))}
        new["metadata"] = {**new["metadata"], "namespace": namespace}
        return self.add(new, record=False)

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the object (its status stays: that is the subresource's)."""
        key = (kind, namespace, name)
        old = self.objects.get(key)
        if old is None:
            raise _not_found(kind, name)
        self.calls.append(Call("patch", kind, name))
        new = _merge_patch(old, {k: v for k, v in patch.items() if k != "status"})
        return self._store(key, new, old)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete now (no finalizers here), then its dependents (background propagation); 404 is fine."""
        key = (kind, namespace or "", name)
        if key not in self.objects:
            return
        self.calls.append(Call("delete", kind, name))
        self._remove(key)

    # -- what a user (or a test) does -----------------------------------------------------------------
    def add(self, obj: Mapping[str, Any], *, record: bool = True) -> Obj:
        """Create an object as `kubectl create` would (status, if given, is kept: a test's fixture)."""
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        kind = new["kind"]
        new.setdefault("apiVersion", KINDS[kind].api_version if kind in KINDS else "v1")
        key = (kind, meta["namespace"], meta["name"])
        if key in self.objects:
            exc = ApiException(status=409, reason="AlreadyExists")
            exc.body = json.dumps({"message": f'{kind} "{meta["name"]}" already exists'})
            raise exc
        meta.update(uid=f"uid-{next(self._uids)}", generation=1, creationTimestamp=rfc3339(self.now()))
        if record:
            self.calls.append(Call("create", kind, meta["name"], created=True))
        stored = self._store(key, new, None)
        if kind == "Job":
            self._start_job_pod(stored)
        return stored

    def update_spec(self, kind: str, namespace: str, name: str, spec: Mapping[str, Any]) -> Obj:
        """Replace the spec (`kubectl apply` of a new one): generation moves when it changed."""
        key = (kind, namespace, name)
        old = self.objects[key]
        return self._store(key, {**old, "spec": copy.deepcopy(dict(spec))}, old)

    def annotate(self, kind: str, namespace: str, name: str, annotations: Mapping[str, str]) -> Obj:
        key = (kind, namespace, name)
        old = self.objects[key]
        new = copy.deepcopy(old)
        new["metadata"].setdefault("annotations", {}).update(annotations)
        return self._store(key, new, old)

    def created(self, kind: str) -> Names:
        """Names of the objects of `kind` the operator created, in order (a re-create counts again)."""
        return [c.name for c in self.calls if c.kind == kind and c.created and c.verb == "apply"]

    def watch(self, watcher: Watcher) -> None:
        self.watchers.append(watcher)

    # -- the controllers' side ------------------------------------------------------------------------
    def complete_job(self, namespace: str, name: str, digest: str | None = None) -> Obj:
        """The Job's pod exits 0 having printed the staging program's result; the Job is Complete."""
        message = json.dumps({"digest": digest}) if digest else ""
        self._finish_job(namespace, name, 0, message, "Complete")
        return self.objects[("Job", namespace, name)]

    def fail_job(
        self, namespace: str, name: str, message: str = "SourceNotFound: no such prefix; fix it"
    ) -> Obj:
        """The Job's pod exits 1 with the program's `Reason: problem` line; the Job Failed."""
        self._finish_job(namespace, name, 1, message, "Failed")
        return self.objects[("Job", namespace, name)]

    def jobs(self, namespace: str) -> Objs:
        return self.list("Job", namespace)

    def sync_deployment(self, namespace: str, name: str, *, template_hash: str | None = None) -> Objs:
        """The Deployment controller: pods of the current template up to spec.replicas (new ones
        Pending, no IP yet), surplus ones deleted; returns the pods created."""
        dep = self.objects[("Deployment", namespace, name)]
        template = dep["spec"]["template"]
        pod_hash = template_hash or f"{dep['metadata']['generation']:x}"
        mine = [p for p in self._pods_of(dep) if p["metadata"]["labels"].get("pod-template-hash") == pod_hash]
        for pod in self._pods_of(dep):
            if pod not in mine:
                self.delete("Pod", namespace, pod["metadata"]["name"])
        wanted = int(dep["spec"].get("replicas", 1))
        for pod in mine[wanted:]:
            self.delete("Pod", namespace, pod["metadata"]["name"])
        created = []
        for _ in range(wanted - len(mine[:wanted])):
            pod = {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": f"{name}-{pod_hash}-{next(self._uids):05d}",
                    "namespace": namespace,
                    "labels": {**template["metadata"].get("labels", {}), "pod-template-hash": pod_hash},
                    "ownerReferences": [self._owner(dep)],
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Pending"},
            }
            created.append(self.add(pod, record=False))
        self._deployment_status(namespace, name)
        return created

    def roll_deployment(self, namespace: str, name: str) -> Objs:
        """Replace every pod with new ones (a changed template, or `kubectl rollout restart`)."""
        return self.sync_deployment(namespace, name, template_hash=f"r{next(self._uids):x}")

    def start_pod(self, namespace: str, name: str, ip: str) -> Obj:
        """The kubelet: the pod runs with `ip`, its containers ready (Ready waits for its gates)."""
        key = ("Pod", namespace, name)
        old = self.objects[key]
        new = copy.deepcopy(old)
        now = rfc3339(self.now())
        status = new["status"]
        status.update(phase="Running", podIP=ip, podIPs=[{"ip": ip}], startTime=status.get("startTime", now))
        restarts = next((c["restartCount"] for c in status.get("containerStatuses", [])), 0)
        status["containerStatuses"] = [
            {
                "name": CONTAINER_NAME,
                "ready": True,
                "restartCount": restarts,
                "state": {"running": {"startedAt": now}},
            }
        ]
        self._set_condition(new, {"type": "PodScheduled", "status": "True"})
        self._set_condition(new, {"type": "ContainersReady", "status": "True"})
        return self._store(key, new, old)

    def restart_container(self, namespace: str, name: str) -> Obj:
        """Triton's container restarted (it lost every model): restartCount + 1, started now."""
        key = ("Pod", namespace, name)
        old = self.objects[key]
        new = copy.deepcopy(old)
        container = new["status"]["containerStatuses"][0]
        container["restartCount"] += 1
        container["state"] = {"running": {"startedAt": rfc3339(self.now())}}
        return self._store(key, new, old)

    # -- inside ---------------------------------------------------------------------------------------
    def _store(self, key: Key, new: Obj, old: Obj | None) -> Obj:
        meta = new["metadata"]
        if old is not None and _body(old) != _body(new):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if key[0] == "Pod":
            self._kubelet_ready(new)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = new
        self._emit("ADDED" if old is None else "MODIFIED", new)
        if key[0] == "Pod" and old is not None:
            self._pod_changed(new)
        return copy.deepcopy(new)

    def _emit(self, event: str, obj: Obj) -> None:
        for watcher in list(self.watchers):
            watcher(event, copy.deepcopy(obj))

    def _remove(self, key: Key) -> None:
        obj = self.objects.pop(key, None)
        if obj is None:
            return
        self._emit("DELETED", obj)
        uid = obj["metadata"]["uid"]
        for dep_key, dep in list(self.objects.items()):
            if any(ref.get("uid") == uid for ref in dep["metadata"].get("ownerReferences") or []):
                self._remove(dep_key)
        if key[0] == "Pod":
            self._pod_changed(obj)

    @staticmethod
    def _owner(obj: Obj) -> Obj:
        meta = obj["metadata"]
        return {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _set_condition(self, obj: Obj, condition: Obj) -> None:
        conditions = obj.setdefault("status", {}).setdefault("conditions", [])
        old = condition_of(obj, condition["type"])
        now = rfc3339(self.now())
        if old is None:
            conditions.append({"lastTransitionTime": now, **condition})
            return
        moved = old.get("status") != condition.get("status")
        old.update(condition)
        if moved and "lastTransitionTime" not in condition:
            old["lastTransitionTime"] = now

    def _kubelet_ready(self, pod: Obj) -> None:
        """Ready = ContainersReady and every readiness gate's condition True."""
        containers = condition_of(pod, "ContainersReady")
        ready = bool(containers and containers.get("status") == "True")
        for gate in (pod.get("spec") or {}).get("readinessGates") or []:
            cond = condition_of(pod, gate["conditionType"])
            ready = ready and bool(cond and cond.get("status") == "True")
        if condition_of(pod, "Ready") is not None or ready:
            self._set_condition(pod, {"type": "Ready", "status": str(ready)})

    def _pods_of(self, dep: Obj) -> Objs:
        uid = dep["metadata"]["uid"]
        return [
            obj
            for (kind, _, _), obj in sorted(self.objects.items())
            if kind == "Pod"
            and any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])
        ]

    def _pod_changed(self, pod: Obj) -> None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if (
                ref["kind"] == "Deployment"
                and ("Deployment", pod["metadata"]["namespace"], ref["name"]) in self.objects
            ):
                self._deployment_status(pod["metadata"]["namespace"], ref["name"])

    def _deployment_status(self, namespace: str, name: str) -> None:
        key = ("Deployment", namespace, name)
        dep = self.objects[key]
        pods = self._pods_of(dep)
        ready = [p for p in pods if (condition_of(p, "Ready") or {}).get("status") == "True"]
        status = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": len(pods),
            "readyReplicas": len(ready),
            "updatedReplicas": len(pods),
            "availableReplicas": len(ready),
        }
        if dep.get("status") != status:
            new = {**dep, "status": status}
            new["metadata"] = {**dep["metadata"], "resourceVersion": str(next(self._versions))}
            self.objects[key] = new
            self._emit("MODIFIED", new)

    def _start_job_pod(self, job: Obj) -> None:
        """The Job controller: one pod per Job, labelled with the Job's name, owned by it."""
        meta, template = job["metadata"], job["spec"]["template"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), JOB_NAME_LABEL: meta["name"]}
        pod = {
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{next(self._uids):05d}",
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [self._owner(job)],
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Running"},
        }
        self.add(pod, record=False)

    def _finish_job(self, namespace: str, name: str, code: int, message: str, condition: str) -> None:
        job_key = ("Job", namespace, name)
        job = self.objects[job_key]
        for pod in self.list("Pod", namespace, f"{JOB_NAME_LABEL}={name}"):
            pod_key = ("Pod", namespace, pod["metadata"]["name"])
            new = copy.deepcopy(pod)
            new["status"] = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "stage",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": code, "message": message}},
                    }
                ],
            }
            self._store(pod_key, new, self.objects[pod_key])
        new_job = copy.deepcopy(job)
        new_job["status"] = {"succeeded" if code == 0 else "failed": 1}
        self._set_condition(new_job, {"type": condition, "status": "True", "reason": condition})
        self._store(job_key, new_job, job)
