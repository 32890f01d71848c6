"""kopf settings: where kopf keeps its bookkeeping, and the shared clients in `memo`."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import kopf

from triton_operator.api.common import FINALIZER, GROUP
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.handlers.tritonserver import STATUS_PERIOD_S, refresh_server
from triton_operator.kube.rest import Kube, new_api_client
from triton_operator.reconcile.model import DEFAULT_OPERATOR_IMAGE, ModelReconciler
from triton_operator.reconcile.server import ServerReconciler
from triton_operator.reconcile.state import OperatorState


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress in status (survives `kubectl replace`; Argo CD 3.x ignores status), diff-base in an
    # annotation under our own group, our own finalizer name: nothing of kopf's shows as drift.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = 20  # INFO and above become Events only through kopf.event (ours)
    settings.watching.server_timeout = 300
    settings.execution.max_workers = int(os.environ.get("TRITON_OPERATOR_WORKERS", "8"))
    # Several operator replicas: only one acts (needs the kopf peering CRD, installed by the chart).
    if os.environ.get("TRITON_OPERATOR_PEERING"):
        settings.peering.name = os.environ["TRITON_OPERATOR_PEERING"]
        settings.peering.standalone = False
        settings.peering.clusterwide = True
    kube = Kube(new_api_client())
    state = OperatorState()
    memo.kube = kube
    memo.state = state
    memo.servers = servers = ServerReconciler(kube, state)
    memo.server_loops = ObjectLoops(partial(refresh_server, servers), STATUS_PERIOD_S, "tritonserver")
    memo.models = ModelReconciler(
        kube, state, operator_image=os.environ.get("TRITON_OPERATOR_IMAGE", DEFAULT_OPERATOR_IMAGE)
    )


@kopf.on.cleanup()
def stop_loops(memo: kopf.Memo, **_: Any) -> None:
    loops: ObjectLoops = memo.server_loops
    loops.stopping.set()
