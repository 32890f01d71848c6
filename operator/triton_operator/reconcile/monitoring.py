"""A TritonServer's PodMonitor: applied where the API server serves the kind, and said in `Monitored`.

A cluster without the Prometheus Operator (no monitoring.coreos.com/v1 PodMonitor) is no fault of the
server: it stays Ready, `Monitored=False` says why, and one Normal Event tells it the first time
(reconcile/optional.py, shared with the autoscaler's ScaledObject).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import DecidedCondition, Reason
from triton_operator.kube.rest import Kube
from triton_operator.reconcile.optional import OptionalChildren, OptionalKind
from triton_operator.reconcile.state import Key
from triton_operator.render.podmonitor import (
    POD_MONITOR_API_VERSION,
    POD_MONITOR_KIND,
    PodMonitorDefaults,
    render_pod_monitor,
    wanted_pod_monitor,
)

PLURAL = "podmonitors"
POD_MONITORS = OptionalKind(
    api_version=POD_MONITOR_API_VERSION,
    kind=POD_MONITOR_KIND,
    plural=PLURAL,
    condition=ConditionType.MONITORED,
    missing=Reason.POD_MONITOR_KIND_MISSING,
    failed=Reason.POD_MONITOR_FAILED,
    unaffected="the pods serve as before",
)


def kind_missing_message() -> str:
    return (
        "a PodMonitor is wanted (the operator's metrics.podMonitor setting or spec.monitoring.podMonitor) "
        f"but the API server does not serve {POD_MONITOR_API_VERSION} {POD_MONITOR_KIND}: install the "
        "Prometheus Operator (or its CRDs), or set spec.monitoring.podMonitor.enabled to false; the pods "
        "serve as before"
    )


def monitored(status: ConditionStatus, reason: Reason, message: str) -> DecidedCondition:
    return DecidedCondition(ConditionType.MONITORED, status, reason, message)


class PodMonitors:
    """Applies (or removes) each server's PodMonitor and keeps its verdict for the status passes."""

    def __init__(self, kube: Kube, defaults: PodMonitorDefaults):
        self.kube = kube
        self.defaults = defaults
        self.children = OptionalChildren(kube, POD_MONITORS)

    def condition(self, key: Key) -> DecidedCondition | None:
        """The server's Monitored condition; None when it wants no PodMonitor (or none was applied yet)."""
        return self.children.condition(key)

    def forget(self, key: Key) -> None:
        self.children.forget(key)

    def apply(self, owner: Mapping[str, Any], spec: TritonServerSpec) -> None:
        """Apply the PodMonitor the spec and the operator's defaults want, or delete one no longer wanted."""
        meta = owner["metadata"]
        wanted = wanted_pod_monitor(spec, self.defaults)
        if wanted is None:
            self.children.remove(owner)
            return
        name = meta["name"]
        self.children.apply(
            owner,
            render_pod_monitor(name, meta["namespace"], meta["uid"], wanted),
            missing=kind_missing_message(),
            applied=monitored(
                ConditionStatus.TRUE,
                Reason.POD_MONITOR_APPLIED,
                f"PodMonitor {name} has Prometheus scrape the pods' metrics port every {wanted.interval}",
            ),
        )
