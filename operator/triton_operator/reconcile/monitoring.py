"""A TritonServer's PodMonitor: applied where the API server serves the kind, and said in `Monitored`.

A cluster without the Prometheus Operator (no monitoring.coreos.com/v1 PodMonitor) is no fault of the
server: it stays Ready, `Monitored=False` says why, and one Normal Event tells it the first time. The
check runs with each apply of the spec (a new generation, or the drift period), never in a retry loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import DecidedCondition, Reason
from triton_operator.kube.events import recorder_for
from triton_operator.kube.rest import Kube
from triton_operator.observe.story import event
from triton_operator.reconcile.state import Key, object_key
from triton_operator.render.podmonitor import (
    POD_MONITOR_API_VERSION,
    POD_MONITOR_KIND,
    PodMonitorDefaults,
    render_pod_monitor,
    wanted_pod_monitor,
)

log = logging.getLogger(__name__)
PLURAL = "podmonitors"


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
        self.verdicts: dict[Key, DecidedCondition] = {}

    def condition(self, key: Key) -> DecidedCondition | None:
        """The server's Monitored condition; None when it wants no PodMonitor (or none was applied yet)."""
        return self.verdicts.get(key)

    def forget(self, key: Key) -> None:
        self.verdicts.pop(key, None)

    def apply(self, owner: Mapping[str, Any], spec: TritonServerSpec) -> None:
        """Apply the PodMonitor the spec and the operator's defaults want, or delete one no longer wanted."""
        meta = owner["metadata"]
        name, namespace, key = meta["name"], meta["namespace"], object_key(owner)
        wanted = wanted_pod_monitor(spec, self.defaults)
        try:
            if wanted is None:
                self.verdicts.pop(key, None)
                # 404 (none there, or the kind not served) is success.
                self.kube.delete(POD_MONITOR_KIND, namespace, name)
                return
            if PLURAL not in (self.kube.served_resources(POD_MONITOR_API_VERSION) or []):
                self._decide(
                    owner,
                    monitored(ConditionStatus.FALSE, Reason.POD_MONITOR_KIND_MISSING, kind_missing_message()),
                )
                return
            manifest = render_pod_monitor(name, namespace, meta["uid"], wanted)
            kopf.adopt(manifest, owner=cast(kopf.Body, owner))
            self.kube.apply(manifest)
        except ApiException as exc:
            message = (
                f"applying PodMonitor {name} failed: {exc.status} {exc.reason}; the pods serve as before"
            )
            log.warning("%s/%s: %s", namespace, name, message)
            self._decide(owner, monitored(ConditionStatus.FALSE, Reason.POD_MONITOR_FAILED, message))
            return
        self._decide(
            owner,
            monitored(
                ConditionStatus.TRUE,
                Reason.POD_MONITOR_APPLIED,
                f"PodMonitor {name} has Prometheus scrape the pods' metrics port every {wanted.interval}",
            ),
        )

    def _decide(self, owner: Mapping[str, Any], verdict: DecidedCondition) -> None:
        key = object_key(owner)
        before = self.verdicts.get(key)
        self.verdicts[key] = verdict
        if verdict.reason != Reason.POD_MONITOR_KIND_MISSING or (
            before is not None and before.reason == verdict.reason
        ):
            return
        written = [
            c for c in (owner.get("status") or {}).get("conditions") or [] if c.get("type") == verdict.type
        ]
        if written and written[0].get("reason") == verdict.reason:
            return  # said before this process started
        # Once: a Normal Event (nothing is wrong with the server; the cluster has no Prometheus Operator).
        told = event(str(verdict.reason), verdict.message[:1].upper() + verdict.message[1:] + ".")
        recorder_for(self.kube).record({"kind": "TritonServer", **owner}, told)
