"""Both kinds' state as Prometheus gauges, one series set per object (kube-state-metrics style).

The alerts on CR state (charts/triton-operator/files/prometheus-rules.yaml) read these. The operator
exports them itself rather than through a kube-state-metrics CustomResourceState config: the operator
already serves /metrics, it knows when it last refreshed an object (a status gone stale is a stopped
pass, which no field of the object says), and a platform team needs no second component with RBAC on
our CRDs. When the operator is down these series go with it, and the operator-down alert says so.

`object_samples` is pure (an object's body -> its samples); `ObjectGauges` keeps each object's label
sets so that a changed condition or phase drops the old series instead of leaving it at 1 for ever.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge
from prometheus_client.registry import REGISTRY, CollectorRegistry

from triton_operator.api.autoscaling import wanted_replicas

SERVER = "TritonServer"
MODEL = "TritonModel"
# Every replica state the model's status knows (api/tritonmodel.py ReplicaState): each is exported,
# zero included, so that a sum over states is the replica count and `state="READY"` is never absent.
REPLICA_STATES = ("READY", "LOADING", "UNAVAILABLE", "UNLOADED", "PENDING")


@dataclass(frozen=True)
class Sample:
    """One gauge value of one object: the gauge's name (a key of GAUGES), its labels, the value."""

    gauge: str
    labels: tuple[tuple[str, str], ...]
    value: float


# name -> (help, label names). Every gauge has `namespace` and the object's own name label first.
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "triton_operator_tritonserver_spec_replicas": (
        "Replicas a TritonServer's spec asks for.",
        ("namespace", "tritonserver"),
    ),
    "triton_operator_tritonserver_status_ready_replicas": (
        "Pods of a TritonServer whose Triton reports ready (status.readyReplicas).",
        ("namespace", "tritonserver"),
    ),
    "triton_operator_tritonserver_condition": (
        "A TritonServer's condition: 1 for its current status and reason.",
        ("namespace", "tritonserver", "type", "status", "reason"),
    ),
    "triton_operator_tritonmodel_replicas": (
        "Replicas of a TritonModel's server by the model's load state there (status.replicas).",
        ("namespace", "tritonmodel", "tritonserver", "state"),
    ),
    "triton_operator_tritonmodel_condition": (
        "A TritonModel's condition: 1 for its current status and reason.",
        ("namespace", "tritonmodel", "type", "status", "reason"),
    ),
    "triton_operator_tritonmodel_rollout_phase": (
        "A TritonModel's canary rollout: 1 for its current phase.",
        ("namespace", "tritonmodel", "phase", "canary_version"),
    ),
    "triton_operator_tritonmodel_rollout_verdict": (
        "A TritonModel's canary rollout: 1 for the verdict of its last analysis.",
        ("namespace", "tritonmodel", "verdict"),
    ),
    "triton_operator_object_last_pass_timestamp_seconds": (
        "When the operator last finished a pass over an object (its status is fresh as of then).",
        ("namespace", "kind", "name"),
    ),
}


LAST_PASS = "triton_operator_object_last_pass_timestamp_seconds"


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(labels.items())


def _conditions(gauge: str, own: Mapping[str, str], status: Mapping[str, Any]) -> list[Sample]:
    samples = []
    for cond in status.get("conditions") or []:
        if not isinstance(cond, Mapping) or not cond.get("type"):
            continue
        labels = {
            **own,
            "type": str(cond["type"]),
            "status": str(cond.get("status", "Unknown")),
            "reason": str(cond.get("reason") or ""),
        }
        samples.append(Sample(gauge, tuple(labels.items()), 1.0))
    return samples


def _wanted(spec: Mapping[str, Any], status: Mapping[str, Any]) -> int:
    """The pods asked for; under autoscaling before the HPA was read, the pods there are (kept as is)."""
    wanted = wanted_replicas(spec, status)
    return wanted if wanted is not None else int(status.get("replicas") or 0)


def _server_samples(namespace: str, name: str, body: Mapping[str, Any]) -> list[Sample]:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    own = {"namespace": namespace, "tritonserver": name}
    samples = [
        Sample(
            "triton_operator_tritonserver_spec_replicas", tuple(own.items()), float(_wanted(spec, status))
        ),
        Sample(
            "triton_operator_tritonserver_status_ready_replicas",
            tuple(own.items()),
            float(status.get("readyReplicas") or 0),
        ),
    ]
    return samples + _conditions("triton_operator_tritonserver_condition", own, status)


def _model_samples(namespace: str, name: str, body: Mapping[str, Any]) -> list[Sample]:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    own = {"namespace": namespace, "tritonmodel": name}
    counts = dict.fromkeys(REPLICA_STATES, 0)
    for replica in status.get("replicas") or []:
        state = str(replica.get("state", "")) if isinstance(replica, Mapping) else ""
        if state in counts:
            counts[state] += 1
    server = str(spec.get("server") or "")
    samples = [
        Sample(
            "triton_operator_tritonmodel_replicas",
            _labels(namespace=namespace, tritonmodel=name, tritonserver=server, state=state),
            float(count),
        )
        for state, count in counts.items()
    ]
    rollout = status.get("rollout") or {}
    if rollout.get("phase"):
        labels = {
            **own,
            "phase": str(rollout["phase"]),
            "canary_version": str(rollout.get("canaryVersion") or ""),
        }
        samples.append(Sample("triton_operator_tritonmodel_rollout_phase", tuple(labels.items()), 1.0))
    if rollout.get("lastVerdict"):
        labels = {**own, "verdict": str(rollout["lastVerdict"])}
        samples.append(Sample("triton_operator_tritonmodel_rollout_verdict", tuple(labels.items()), 1.0))
    return samples + _conditions("triton_operator_tritonmodel_condition", own, status)


def object_samples(kind: str, body: Mapping[str, Any]) -> list[Sample]:
    """The gauges of one object as its body says (spec and status); [] for another kind."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    if kind == SERVER:
        return _server_samples(namespace, name, body)
    if kind == MODEL:
        return _model_samples(namespace, name, body)
    return []


class ObjectGauges:
    """The gauges of every object the operator tracks; an object's series are replaced as a whole."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._lock = threading.Lock()
        self._gauges = {
            name: Gauge(name, doc, list(labels), registry=registry) for name, (doc, labels) in GAUGES.items()
        }
        # (kind, namespace, name) -> the (gauge, labels) its body last set; and the objects passed over.
        self._series: dict[tuple[str, str, str], set[tuple[str, tuple[tuple[str, str], ...]]]] = {}
        self._passed: set[tuple[str, str, str]] = set()

    def observe(self, kind: str, body: Mapping[str, Any]) -> None:
        """Set the object's gauges from its body; series it no longer has are removed."""
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
        samples = object_samples(kind, body)
        with self._lock:
            old = self._series.get(key, set())
            new = {(s.gauge, s.labels) for s in samples}
            for gauge, labels in old - new:
                self._remove(gauge, labels)
            for sample in samples:
                self._gauges[sample.gauge].labels(*(v for _, v in sample.labels)).set(sample.value)
            self._series[key] = new

    def passed(self, kind: str, namespace: str, name: str, when: float | None = None) -> None:
        """Record that a pass over the object finished (the status-stale alert reads it)."""
        with self._lock:
            self._gauges[LAST_PASS].labels(namespace, kind, name).set(time.time() if when is None else when)
            self._passed.add((kind, namespace, name))

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Remove every series of a deleted object."""
        with self._lock:
            for gauge, labels in self._series.pop((kind, namespace, name), set()):
                self._remove(gauge, labels)
            if (kind, namespace, name) in self._passed:
                self._passed.discard((kind, namespace, name))
                self._remove(LAST_PASS, _labels(namespace=namespace, kind=kind, name=name))

    def _remove(self, gauge: str, labels: Sequence[tuple[str, str]]) -> None:
        with contextlib.suppress(KeyError):  # never set (a race with forget): nothing to remove
            self._gauges[gauge].remove(*(v for _, v in labels))


OBJECT_GAUGES = ObjectGauges()
