"""TritonServer: apply on create/update/resume; a per-server loop keeps status true to what it sees."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import kopf

from triton_operator.api.common import GROUP, VERSION
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.opmetrics import measured
from triton_operator.reconcile.server import KIND, ServerReconciler
from triton_operator.reconcile.state import OperatorState, object_key
from triton_operator.render.labels import APP_NAME, COMPONENT, MANAGED_BY

PLURAL = "tritonservers"
# How often each server's status (pods, Triton health, metrics) is refreshed without any event.
STATUS_PERIOD_S = float(os.environ.get("TRITON_OPERATOR_STATUS_PERIOD", "10"))
# How often the children are re-applied if nothing else triggered it (repairs manual edits).
DRIFT_PERIOD_S = float(os.environ.get("TRITON_OPERATOR_DRIFT_PERIOD", "300"))
CHILD_LABELS = {
    "app.kubernetes.io/name": APP_NAME,
    "app.kubernetes.io/component": COMPONENT,
    "app.kubernetes.io/managed-by": MANAGED_BY,
}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def apply_server(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    servers: ServerReconciler = memo.servers
    with measured(KIND, "apply"):
        servers.apply(body)
    with measured(KIND, "observe"):
        servers.refresh(body)


@kopf.on.event(GROUP, VERSION, PLURAL)
def track_server(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep each server's status loop fed with its latest body; forget it once it is deleted.

    A loop of our own, not a kopf daemon: daemons always put a finalizer on the object, and a
    TritonServer needs none (its children go by garbage collection), so deleting one never waits
    for the operator, even when the operator is gone.
    """
    loops: ObjectLoops = memo.server_loops
    key = object_key(body)
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        loops.forget(key)
        memo.state.forget(key)
    else:
        loops.track(key, dict(body))


def refresh_server(servers: ServerReconciler, body: Mapping[str, Any]) -> None:
    """One pass of a server's status loop: re-apply when the drift period is due, then observe."""
    key = object_key(body)
    now = time.monotonic()
    try:
        if now - servers.state.applied_at.setdefault(key, now) >= DRIFT_PERIOD_S:
            servers.state.applied_at[key] = now
            with measured(KIND, "drift"):
                servers.apply(body)
        with measured(KIND, "observe"):
            servers.refresh(body)
    except kopf.PermanentError:
        pass  # reported in status; wait for a spec change


@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
def child_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    loops: ObjectLoops = memo.server_loops
    instance = labels.get("app.kubernetes.io/instance")
    if instance and namespace:
        loops.poke((namespace, instance))
        state.poke_models_of((namespace, instance))  # a new or restarted pod needs its models loaded
