"""The controllers a pass waits on, played by the fake Kubernetes one explicit step at a time: the
Job controller (a pod per Job; `complete_job`, `fail_job`), the Deployment controller (`sync_deployment`,
`roll_deployment`) and the kubelet (`start_pod`, `restart_container`). Mixed into `FakeKube`."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Callable
from datetime import datetime

from triton_operator.render.labels import JOB_NAME_LABEL
from triton_operator.render.server import CONTAINER_NAME

from tests.support.kubesemantics import Key, Obj, Objs, condition_of, rfc3339


class FakeControllers:
    """Needs the fake API server's store (FakeKube provides every method below that raises)."""

    objects: dict[Key, Obj]
    now: Callable[[], datetime]
    _uids: itertools.count[int]
    _versions: itertools.count[int]

    def _store(self, key: Key, new: Obj, old: Obj | None) -> Obj:
        raise NotImplementedError

    def _emit(self, event: str, obj: Obj) -> None:
        raise NotImplementedError

    def _set_condition(self, obj: Obj, condition: Obj) -> None:
        raise NotImplementedError

    def _owner(self, obj: Obj) -> Obj:
        raise NotImplementedError

    def add(self, obj: Obj, *, record: bool = True) -> Obj:
        raise NotImplementedError

    def list(self, kind: str, namespace: str | None, label_selector: str | None = None) -> Objs:
        raise NotImplementedError

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        raise NotImplementedError

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
        # As the real controller: by the pod template alone (a scale moves the generation, not the pods).
        pod_hash = (
            template_hash or hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        )
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
