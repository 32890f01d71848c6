"""One in-memory Kubernetes for whole operator passes without a cluster (issue 18, point 5).

`FakeKube` is the operator's `Kube` (kube/rest.py) over a dict of objects, with the API server's
semantics a pass depends on: resourceVersion on every write, generation bumped only by a spec change,
status only through its subresource (apply ignores it), server-side apply's field ownership (a field
an apply leaves out goes only if no other manager holds it; `scale` writes as the HPA does), label
selectors, owner references with background garbage collection, and a record of every write (`calls`)
so a test counts the Jobs a pass created. It also plays the controllers a pass waits on, one explicit
step at a time (fakecontrollers.py,
mixed in): the Job controller (`complete_job`, `fail_job`), the Deployment controller (`sync_deployment`,
`roll_deployment`) and the kubelet (`start_pod`, `restart_container`; Ready follows ContainersReady and
the readiness gates).
Watchers (`watch`) get every change as (event type, object), as kopf's watch streams would.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from triton_operator.kube.rest import FIELD_MANAGER, KINDS, Kube

from tests.support.fakecontrollers import FakeControllers
from tests.support.kubesemantics import (
    Call,
    FieldOwners,
    Key,
    Names,
    Obj,
    Watcher,
    condition_of,
    merge_patch,
    not_found,
    parse_selector,
    rfc3339,
    spec_part,
)


class FakeKube(FakeControllers, Kube):
    """The `Kube` interface in memory (see the module doc). `now` gives the API server's clock."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        # No API client: a method this fake does not implement fails loudly in `_call`.
        self.now = now
        self.objects: dict[Key, Obj] = {}
        self.calls: list[Call] = []
        self.watchers: list[Watcher] = []
        self.served: dict[str, Names] = {}  # group version -> resources (discovery)
        # kind -> the error the API server answers every apply of that kind with (a webhook, a quota).
        self.refusals: dict[str, ApiException] = {}
        self.fields = FieldOwners()
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

    def apply(
        self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply as `field_manager`: creates, or sets the applied fields (taking them from
        other managers with `force`, else 409 where one holds another value) and removes those this
        manager alone held and no longer applies; status is ignored."""
        kind, meta = obj["kind"], obj["metadata"]
        if kind not in KINDS:
            raise NotImplementedError(f"FakeKube: unknown kind {kind}")
        if kind in self.refusals:
            self.calls.append(Call("refused", kind, meta["name"]))
            raise self.refusals[kind]
        key = (kind, meta.get("namespace") or "", meta["name"])
        old = self.objects.get(key)
        applied = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
        body = self.fields.apply(
            key, spec_part(old or {}), spec_part(applied), field_manager, force=force or old is None
        )
        if old is None:
            self.calls.append(Call("apply", kind, meta["name"], created=True))
            return self.add(applied, record=False)
        self.calls.append(Call("apply", kind, meta["name"]))
        new = {k: v for k, v in old.items() if k in ("apiVersion", "kind", "metadata", "status")}
        new.update({k: v for k, v in applied.items() if k in ("apiVersion", "kind")}, **body)
        allocated = (old.get("spec") or {}).get("clusterIP")
        if kind == "Service" and allocated and "clusterIP" not in (new.get("spec") or {}):
            new["spec"] = {**new["spec"], "clusterIP": allocated}  # the apiserver's field, not the applier's
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
            raise not_found(kind, name)
        self.calls.append(Call("status", kind, name))
        new = {**old, "status": merge_patch(old.get("status") or {}, status)}
        return self._store(key, new, old)

    def patch_pod_condition(self, namespace: str, name: str, condition: Mapping[str, Any]) -> None:
        """One pod condition set by type (strategic merge); Ready follows, as the kubelet computes it."""
        key = ("Pod", namespace, name)
        old = self.objects.get(key)
        if old is None:
            raise not_found("Pod", name)
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
            raise not_found(kind, name)
        self.calls.append(Call("patch", kind, name))
        new = merge_patch(old, {k: v for k, v in patch.items() if k != "status"})
        self.fields.update(key, spec_part(old), spec_part(new), "merge-patch")
        return self._store(key, new, old)

    def scale(self, kind: str, namespace: str, name: str, replicas: int, manager: str) -> Obj:
        """Write spec.replicas through the scale subresource, as an HPA (kube-controller-manager) does."""
        key = (kind, namespace, name)
        old = self.objects[key]
        self.calls.append(Call("scale", kind, name))
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = replicas
        self.fields.update(key, spec_part(old), spec_part(new), manager)
        return self._store(key, new, old)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete now (no finalizers here), then its dependents (background propagation); 404 is fine."""
        key = (kind, namespace or "", name)
        if key not in self.objects:
            return
        self.calls.append(Call("delete", kind, name))
        self._remove(key)

    # -- what a user (or a test) does -----------------------------------------------------------------
    def allocate_cluster_ip(self, service: Mapping[str, Any]) -> str | None:
        """The ClusterIP of a new Service (None: none, as for the Services no test talks to)."""
        return None

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
        if kind == "Service" and not (new.get("spec") or {}).get("clusterIP"):
            # The apiserver allocates a ClusterIP on create; `allocate_cluster_ip` stands in for it.
            ip = self.allocate_cluster_ip(new)
            if ip:
                new.setdefault("spec", {})["clusterIP"] = ip
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

    # -- inside ---------------------------------------------------------------------------------------
    def _store(self, key: Key, new: Obj, old: Obj | None) -> Obj:
        meta = new["metadata"]
        if key[0] == "Deployment":  # the apiserver's default (owned by no manager)
            new.setdefault("spec", {}).setdefault("replicas", 1)
        if old is not None and spec_part(old) != spec_part(new):
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
        self.fields.forget(key)
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
        if containers is not None:  # the kubelet says Ready (True or False) once it runs the pod
            self._set_condition(pod, {"type": "Ready", "status": str(ready)})
