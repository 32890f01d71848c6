"""TritonModel: reconcile on create/update/resume; a per-model loop keeps it staged, loaded and observed."""

from __future__ import annotations

import os
from typing import Any

import kopf

from triton_operator.api.common import GROUP, VERSION
from triton_operator.handlers.loops import CANCELLATION_BACKOFF_S, sleep_until_poked
from triton_operator.opmetrics import measured
from triton_operator.reconcile.model import KIND, MODEL_LABEL, STAGING_LABELS, ModelReconciler
from triton_operator.reconcile.state import OperatorState, object_key

PLURAL = "tritonmodels"
# How often each model's status (staging, loads, metrics) is refreshed without any event.
STATUS_PERIOD_S = float(os.environ.get("TRITON_OPERATOR_STATUS_PERIOD", "10"))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def apply_model(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    models: ModelReconciler = memo.models
    with measured(KIND, "apply"):
        models.reconcile(body)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=CANCELLATION_BACKOFF_S, cancellation_timeout=10)
def watch_model(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Reconcile every STATUS_PERIOD_S, or at once when poked (server pods, its Job, the server)."""
    models: ModelReconciler = memo.models
    state: OperatorState = memo.state
    key = object_key(body)
    poke = state.model_poke(key)
    while not stopped:
        sleep_until_poked(poke, stopped, STATUS_PERIOD_S)
        poke.clear()
        if stopped or body["metadata"].get("deletionTimestamp"):
            break
        try:
            with measured(KIND, "observe"):
                models.reconcile(body, stopped=lambda: bool(stopped))
        except kopf.PermanentError:
            pass  # reported in status; wait for a spec change
        except Exception as exc:  # the loop must survive anything one pass does
            logger.warning(f"model reconcile failed, retrying: {exc}")


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_model(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Unload from every reachable replica; with keepFilesOnDelete false also remove the staged files.

    A removal that fails or is not done yet raises kopf.TemporaryError: kopf keeps the finalizer and
    calls again later.
    """
    models: ModelReconciler = memo.models
    with measured(KIND, "delete"):
        unloaded = models.delete(body)
    logger.info(f"unloaded from {len(unloaded)} replicas: {', '.join(unloaded) or 'none reachable'}")


@kopf.on.event("batch", "v1", "jobs", labels=STAGING_LABELS)
@kopf.on.event("v1", "pods", labels=STAGING_LABELS)
def staging_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """A staging Job or its pod changed: its model looks at once."""
    state: OperatorState = memo.state
    model = labels.get(MODEL_LABEL)
    if model and namespace:
        state.poke_model((namespace, model))


@kopf.on.event(GROUP, VERSION, "tritonservers")
def server_changed(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A TritonServer appeared, changed or went: the models placed on it look at once."""
    state: OperatorState = memo.state
    if namespace and name:
        state.poke_models_of((namespace, name))
