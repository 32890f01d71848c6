"""TritonServer: apply on create/update/resume; a per-server loop keeps status true to what it sees."""

from __future__ import annotations

import os
from typing import Any

import kopf

from triton_operator.api.common import GROUP, VERSION
from triton_operator.handlers.loops import CANCELLATION_BACKOFF_S, sleep_until_poked
from triton_operator.opmetrics import measured
from triton_operator.reconcile.server import KIND, ServerReconciler
from triton_operator.reconcile.state import OperatorState
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


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=CANCELLATION_BACKOFF_S, cancellation_timeout=10)
def watch_server(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Refresh status every STATUS_PERIOD_S, or at once when a pod or the Deployment changes."""
    servers: ServerReconciler = memo.servers
    state: OperatorState = memo.state
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    since_apply = 0.0
    try:
        while not stopped:
            sleep_until_poked(state.pokes[key], stopped, STATUS_PERIOD_S)
            state.pokes[key].clear()
            if stopped:
                break
            try:
                if since_apply >= DRIFT_PERIOD_S:
                    since_apply = 0.0
                    with measured(KIND, "drift"):
                        servers.apply(body)
                with measured(KIND, "observe"):
                    servers.refresh(body)
            except kopf.PermanentError:
                pass  # reported in status; wait for a spec change
            except Exception as exc:  # the loop must survive anything one pass does
                logger.warning(f"status refresh failed, retrying: {exc}")
            since_apply += STATUS_PERIOD_S
    finally:
        state.forget(key)


@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
def child_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    instance = labels.get("app.kubernetes.io/instance")
    if instance and namespace:
        state.poke((namespace, instance))
        state.poke_models_of((namespace, instance))  # a new or restarted pod needs its models loaded
