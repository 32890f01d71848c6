"""TritonModel: a loop per model keeps it staged, loaded and observed; its finalizer unloads it on delete."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from triton_operator.api.common import GROUP, VERSION
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.kube.events import recorder_for
from triton_operator.kube.rest import namespace_terminating
from triton_operator.observe.story import deletion_story
from triton_operator.opmetrics import measured
from triton_operator.opmetrics_objects import OBJECT_GAUGES
from triton_operator.reconcile.model import KIND, ModelReconciler
from triton_operator.reconcile.server import KIND as SERVER_KIND
from triton_operator.reconcile.state import OperatorState, object_key, owner_name
from triton_operator.render.labels import MODEL_LABEL, SPLIT_OF_LABEL, STAGING_LABELS

PLURAL = "tritonmodels"
# How often each model's status (staging, loads, metrics) is refreshed without any event.
STATUS_PERIOD_S = float(os.environ.get("TRITON_OPERATOR_STATUS_PERIOD", "10"))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def track_model(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Feed the model's loop its latest body (a new spec gets a pass at once); stop it once deleting.

    Async and in memory only: with 1,000 models, no event ever waits for a thread.
    """
    loops: ObjectLoops = memo.loops
    key = object_key(body)
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        loops.forget(KIND, key)  # the finalizer's handler (delete_model) takes it from here
        OBJECT_GAUGES.forget(KIND, *key)
    else:
        OBJECT_GAUGES.observe(KIND, body)
        loops.track(KIND, key, dict(body))
    # The owner reference names the parent in full; the label holds a hash of a long name.
    labels = body["metadata"].get("labels") or {}
    parent = (owner_name(body, KIND) or labels[SPLIT_OF_LABEL]) if SPLIT_OF_LABEL in labels else None
    if parent:  # a copy of a model served through a Gateway: its state decides the parent's weights
        loops.poke(KIND, (key[0], parent))


def model_pass(
    models: ModelReconciler, loops: ObjectLoops, body: Mapping[str, Any], should_stop: Callable[[], bool]
) -> Mapping[str, Any] | None:
    """One pass of a model's loop: stage, load on every ready replica, observe into status."""
    try:
        with measured(KIND, "observe"):
            written = models.reconcile(body, stopped=should_stop)
        OBJECT_GAUGES.passed(KIND, *object_key(body))
        return written
    except kopf.PermanentError:
        OBJECT_GAUGES.passed(KIND, *object_key(body))
        return None  # reported in status; passes go on (a fixed server or spec is noticed)
    except ApiException as exc:
        # Its namespace is being deleted (the model with it) and its staging Job went first: creating it
        # again is refused every pass until the model's turn comes. Nothing to do, nothing to log.
        if namespace_terminating(exc):
            return None
        raise
    finally:
        memory = models.state.models.get(object_key(body))
        if memory is not None and memory.settled_news and memory.server is not None:
            # This model is now loaded into a pod that may wait for it: its server opens the gate.
            memory.settled_news = False
            loops.poke(SERVER_KIND, memory.server)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_model(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Unload from every reachable replica; with keepFilesOnDelete false also remove the staged files.

    Never waits on anything: a removal that fails or is not done yet raises kopf.TemporaryError, and
    kopf keeps the finalizer and calls again later.
    """
    loops: ObjectLoops = memo.loops
    models: ModelReconciler = memo.models
    loops.forget(KIND, object_key(body))
    with measured(KIND, "delete"):
        unloaded = models.delete(body)
    logger.info(f"unloaded from {len(unloaded)} replicas: {', '.join(unloaded) or 'none reachable'}")
    for event in deletion_story(KIND, unloaded):
        recorder_for(models.kube).record(body, event)


@kopf.on.event("batch", "v1", "jobs", labels=STAGING_LABELS)
@kopf.on.event("v1", "pods", labels=STAGING_LABELS)
async def staging_changed(
    type: str | None, body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """A staging Job or its pod changed: remember what it says now, and its model looks at once."""
    loops: ObjectLoops = memo.loops
    state: OperatorState = memo.state
    if body.get("kind") == "Job":
        state.staging.saw_job(type, body)
    else:
        state.staging.saw_pod(type, body)
    # A Job's owner reference names its model in full (the label holds a hash of a long name); a pod's
    # label is all it has: a long-named model then sees its pod's news on its next period.
    model = owner_name(body, KIND) or labels.get(MODEL_LABEL)
    if model and namespace:
        loops.poke(KIND, (namespace, model))
