"""TritonServer: a loop per server applies its children (on a new spec, or to repair drift) and
keeps its status true to what it sees; watch events feed the loops."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from triton_operator.api.common import GROUP, LABEL_INSTANCE, VERSION
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.opmetrics import measured
from triton_operator.opmetrics_objects import OBJECT_GAUGES
from triton_operator.reconcile.leftovers import unload_leftovers
from triton_operator.reconcile.server import KIND, ServerReconciler
from triton_operator.reconcile.state import AppliedSpec, OperatorState, object_key, pod_index_key
from triton_operator.render.labels import CHILD_LABELS

PLURAL = "tritonservers"
# How often each server's status (pods, Triton health, metrics) is refreshed without any event.
STATUS_PERIOD_S = float(os.environ.get("TRITON_OPERATOR_STATUS_PERIOD", "10"))
# How often the children are re-applied if nothing else triggered it (repairs manual edits).
DRIFT_PERIOD_S = float(os.environ.get("TRITON_OPERATOR_DRIFT_PERIOD", "300"))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def track_server(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Feed the server's loop its latest body (a new spec gets a pass at once); forget it once deleted.

    A loop of our own, not kopf handlers or a daemon: a daemon puts a finalizer on the object, and a
    TritonServer needs none (its children go by garbage collection), so deleting one never waits for
    the operator, even when the operator is gone. Async and in memory only: it never waits for a thread.
    """
    loops: ObjectLoops = memo.loops
    state: OperatorState = memo.state
    key = object_key(body)
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        loops.forget(KIND, key)
        state.forget(key)
        memo.servers.forget(key)
        OBJECT_GAUGES.forget(KIND, *key)
        news = True
    else:
        OBJECT_GAUGES.observe(KIND, body)
        state.servers.put(key, dict(body))  # its models read it from here: no GET of their own
        news = loops.track(KIND, key, dict(body))
    if news:  # new, deleted or a new spec (not its own status writes): its models look at once
        for model in state.models_on(key):
            loops.poke("TritonModel", model)


def apply_due(last: AppliedSpec | None, uid: str, generation: int, now: float) -> str | None:
    """Which step is due: `apply` (a spec this process has not applied), `drift` (repair), or None."""
    if last is None or (last.uid, last.generation) != (uid, generation):
        return "apply"
    return "drift" if now - last.at >= DRIFT_PERIOD_S else None


def server_pass(
    servers: ServerReconciler, body: Mapping[str, Any], should_stop: Callable[[], bool]
) -> Mapping[str, Any] | None:
    """One pass of a server's loop: apply a spec not applied yet (or when drift repair is due), observe."""
    key = object_key(body)
    meta = body["metadata"]
    generation, uid = int(meta.get("generation", 1)), str(meta.get("uid", ""))
    now = time.monotonic()
    last = servers.state.applied.get(key)
    try:
        step = apply_due(last, uid, generation, now)
        if step:
            with measured(KIND, step):
                complete = servers.apply(body)
            if complete:  # else part of it waits (a scale to zero): the next pass applies again
                servers.state.applied[key] = AppliedSpec(uid, generation, now)
        if should_stop():
            return None
        with measured(KIND, "observe"):
            written = servers.refresh(body)
            unload_leftovers(servers.kube, servers.state, key)  # after refresh read each pod's index
        OBJECT_GAUGES.passed(KIND, *key)
        return written
    except kopf.PermanentError:
        # Reported in status; the same spec is not applied again until the drift period.
        servers.state.applied[key] = AppliedSpec(uid, generation, now)
        OBJECT_GAUGES.passed(KIND, *key)
        return None
    except kopf.TemporaryError:
        OBJECT_GAUGES.passed(KIND, *key)
        return None  # reported in status; the next period applies again


@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
async def child_changed(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A server's pod or Deployment changed: the server and its models look at once, with fresh reads."""
    state: OperatorState = memo.state
    loops: ObjectLoops = memo.loops
    instance = labels.get(LABEL_INSTANCE)
    if not (instance and namespace):
        return
    server = (namespace, instance)
    if body.get("kind") == "Pod":
        state.server_pods.invalidate(server)
        state.indexes.invalidate(pod_index_key(body))
    loops.poke(KIND, server)
    for model in state.models_on(server):  # a new or restarted pod needs its models loaded
        loops.poke("TritonModel", model)
