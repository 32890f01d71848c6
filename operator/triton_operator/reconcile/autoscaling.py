"""A TritonServer's autoscaler: its KEDA ScaledObject, who owns the Deployment's replica count, and what
the HPA says (status.autoscaling, the `Autoscaled` condition).

Replicas: the operator applies the Deployment with server-side apply. Under spec.autoscaling it leaves
`.spec.replicas` out, so it no longer owns it and never sets it back; the HPA writes it through the
Deployment's scale subresource. Leaving a field out of an apply deletes it (the Deployment would fall
to its default, 1 replica) if the applier was its only owner; so before that apply, a second field
manager (HANDOVER_MANAGER) applies the count the Deployment has now, and the field keeps an owner. This
is the hand-over Kubernetes documents for moving replicas to an HPA. Turning autoscaling off, the
operator's apply sets spec.replicas again (forced: it takes the field back from the HPA's manager).

A cluster without KEDA (no keda.sh/v1alpha1 ScaledObject): `Autoscaled=False` says so, one Normal Event
tells it (reconcile/optional.py, as for the PodMonitor), and the pool keeps its current size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import DecidedCondition, Reason
from triton_operator.kube.rest import Kube
from triton_operator.observe.autoscaling import autoscaled_condition, autoscaling_status
from triton_operator.reconcile.optional import OptionalChildren, OptionalKind
from triton_operator.reconcile.state import Key, object_key
from triton_operator.render.autoscaling import (
    PROMETHEUS_ADDRESS_ENV,
    SCALED_OBJECT_API_VERSION,
    SCALED_OBJECT_KIND,
    SCALED_OBJECTS,
    hpa_name,
    render_scaled_object,
)
from triton_operator.render.labels import owner_labels
from triton_operator.render.podmonitor import PodMonitorDefaults, wanted_pod_monitor
from triton_operator.render.server import deployment_name

log = logging.getLogger(__name__)
# The field manager that keeps the Deployment's replica count owned while the operator lets go of it.
HANDOVER_MANAGER = "triton-operator-replicas-handover"
SCALED_OBJECT = OptionalKind(
    api_version=SCALED_OBJECT_API_VERSION,
    kind=SCALED_OBJECT_KIND,
    plural=SCALED_OBJECTS,
    condition=ConditionType.AUTOSCALED,
    missing=Reason.SCALED_OBJECT_KIND_MISSING,
    failed=Reason.SCALED_OBJECT_FAILED,
    unaffected="the pool keeps its current size",
)


def kind_missing_message() -> str:
    return (
        "spec.autoscaling is set but the API server does not serve "
        f"{SCALED_OBJECT_API_VERSION} {SCALED_OBJECT_KIND}: install KEDA, or remove "
        "spec.autoscaling and set spec.replicas; the pool keeps its current size"
    )


def address_missing_message() -> str:
    return (
        "spec.autoscaling needs the Prometheus that scrapes the pods: set "
        "spec.autoscaling.prometheusAddress, "
        f"or the operator's default (the chart's autoscaling.prometheusAddress, {PROMETHEUS_ADDRESS_ENV}); "
        "the pool keeps its current size"
    )


def autoscaled(status: ConditionStatus, reason: Reason, message: str) -> DecidedCondition:
    return DecidedCondition(ConditionType.AUTOSCALED, status, reason, message)


def handover_count(spec: TritonServerSpec, running: Mapping[str, Any] | None) -> int | None:
    """The replica count the hand-over manager holds on the Deployment: the one it has now (never a
    change), or the fewest replicas for a Deployment just made; None without autoscaling."""
    if spec.autoscaling is None:
        return None
    current = ((running or {}).get("spec") or {}).get("replicas")
    return int(current) if isinstance(current, int) else spec.autoscaling.min_replicas


class Autoscalers:
    """Applies (or removes) each server's ScaledObject and reads its HPA back."""

    def __init__(self, kube: Kube, prometheus_address: str | None, pod_monitors: PodMonitorDefaults):
        self.kube = kube
        self.prometheus_address = prometheus_address
        self.pod_monitors = pod_monitors
        self.children = OptionalChildren(kube, SCALED_OBJECT)

    def forget(self, key: Key) -> None:
        self.children.forget(key)

    def hand_over_replicas(self, owner: Mapping[str, Any], count: int) -> None:
        """Have HANDOVER_MANAGER own the Deployment's replica count at `count` (not forced: where another
        manager, the HPA, holds a different count, the API server answers 409 and the count is theirs)."""
        meta = owner["metadata"]
        manifest = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment_name(meta["name"]), "namespace": meta["namespace"]},
            "spec": {"replicas": count},
        }
        try:
            self.kube.apply(manifest, field_manager=HANDOVER_MANAGER, force=False)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def apply(self, owner: Mapping[str, Any], spec: TritonServerSpec) -> None:
        """Apply the ScaledObject spec.autoscaling wants, or delete one no longer wanted."""
        meta = owner["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        autoscaling = spec.autoscaling
        if autoscaling is None:
            self.children.remove(owner)
            return
        address = autoscaling.prometheus_address or self.prometheus_address
        if address is None:
            verdict = autoscaled(
                ConditionStatus.FALSE, Reason.PROMETHEUS_ADDRESS_MISSING, address_missing_message()
            )
            self.children.decide(owner, verdict)
            return
        monitor = wanted_pod_monitor(spec, self.pod_monitors)
        manifest = render_scaled_object(
            name,
            namespace,
            autoscaling,
            prometheus_address=address,
            scrape_interval=monitor.interval if monitor is not None else self.pod_monitors.interval,
            owner_labels=owner_labels(name, meta["uid"]),
        )
        self.children.apply(
            owner,
            manifest,
            missing=kind_missing_message(),
            applied=autoscaled(
                ConditionStatus.TRUE,
                Reason.SCALING_ACTIVE,
                f"ScaledObject {name} scales the pool between {autoscaling.min_replicas} and "
                f"{autoscaling.max_replicas} replicas",
            ),
        )

    def observe(
        self, owner: Mapping[str, Any], spec: TritonServerSpec, replicas: int
    ) -> tuple[dict[str, Any] | None, DecidedCondition | None]:
        """status.autoscaling and the Autoscaled condition, from the HPA (one GET a status period);
        (None, None) without autoscaling, or before this process applied the spec."""
        meta = owner["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        applied = self.children.condition(object_key(owner))
        if spec.autoscaling is None or applied is None:
            return None, None
        hpa = None
        in_place = applied.status == ConditionStatus.TRUE
        if in_place:
            try:
                hpa = self.kube.get("HorizontalPodAutoscaler", namespace, hpa_name(name))
            except ApiException as exc:
                message = (
                    f"reading HPA {hpa_name(name)} failed: {exc.status} {exc.reason}; the pool keeps its size"
                )
                log.warning("%s/%s: %s", namespace, name, message)
                applied = autoscaled(ConditionStatus.FALSE, Reason.SCALED_OBJECT_FAILED, message)
        status = autoscaling_status(name, hpa_name(name), spec.autoscaling, hpa, in_place=in_place)
        return status, autoscaled_condition(applied, hpa_name(name), spec.autoscaling, hpa, replicas)
