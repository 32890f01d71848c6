"""kopf settings: where kopf keeps its bookkeeping, and the shared clients and loops in `memo`."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import kopf

from triton_operator.api.common import FINALIZER
from triton_operator.handlers import tritonmodel, tritonserver
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.kube.rest import Kube, new_api_client
from triton_operator.reconcile.model import KIND as MODEL_KIND
from triton_operator.reconcile.model import ModelReconciler
from triton_operator.reconcile.server import KIND as SERVER_KIND
from triton_operator.reconcile.server import ServerReconciler
from triton_operator.reconcile.state import OperatorState
from triton_operator.render.staging import DEFAULT_OPERATOR_IMAGE

# Passes (staging, loads, observation) running at once over all objects of both kinds.
LOOP_WORKERS = int(os.environ.get("TRITON_OPERATOR_WORKERS", "8"))
# kopf's own executor runs only the sync delete handler now (the event handlers are async).
KOPF_WORKERS = 4


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps no copy of the last handled spec: the operator is level-based (its loops compare what
    is with what the spec wants) and has no on.update handlers that would need a diff.

    kopf's default copy is an annotation holding the whole spec plus labels and annotations; next to
    kubectl's own last-applied copy it would halve the largest spec an object can carry (annotations
    share 256 KiB), cost a write per created or changed object, and show in Argo CD's diffs.
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress in status (survives `kubectl replace`; Argo CD 3.x ignores status), no diff-base (see
    # NoDiffBase), our own finalizer name: nothing of kopf's shows as drift.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = FINALIZER
    # Events are the operator's own (kube.events, From: triton-operator, aggregated); kopf posts none,
    # not even its handlers' log lines.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.execution.max_workers = KOPF_WORKERS
    kube = Kube(new_api_client())
    state = OperatorState(
        read_ttl_s=min(tritonserver.STATUS_PERIOD_S, tritonmodel.STATUS_PERIOD_S),
        models_gate=bool(memo.get("models_gate", True)),
    )
    memo.kube = kube
    memo.state = state
    operator_image = os.environ.get("TRITON_OPERATOR_IMAGE", DEFAULT_OPERATOR_IMAGE)
    memo.servers = servers = ServerReconciler(kube, state, operator_image=operator_image)
    memo.models = models = ModelReconciler(kube, state, operator_image=operator_image)
    memo.loops = loops = ObjectLoops(workers=LOOP_WORKERS, name="reconcile")
    server_pass = partial(tritonserver.server_pass, servers)
    loops.register(SERVER_KIND, server_pass, tritonserver.STATUS_PERIOD_S)
    loops.register(MODEL_KIND, partial(tritonmodel.model_pass, models, loops), tritonmodel.STATUS_PERIOD_S)


@kopf.on.cleanup()
def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    loops: ObjectLoops = memo.loops
    loops.stop()
