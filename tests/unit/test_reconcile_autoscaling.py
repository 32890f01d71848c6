"""The ScaledObject's apply against an API server that refuses it, and the replica hand-over against one
where the HPA holds another count (the fake API server's field ownership)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.reconcile.autoscaling import HANDOVER_MANAGER, Autoscalers, handover_count
from triton_operator.render.podmonitor import PodMonitorDefaults

from tests.support.fakekube import FakeKube

pytestmark = pytest.mark.unit

AUTO = {"minReplicas": 2, "maxReplicas": 5, "target": {"value": 4}}
SPEC = TritonServerSpec.model_validate({"autoscaling": AUTO})
OWNER = {
    "apiVersion": "tritonoperator.dev/v1alpha1",
    "kind": "TritonServer",
    "metadata": {"name": "pool", "namespace": "serving", "uid": "uid-1"},
    "spec": {"autoscaling": AUTO},
}


def autoscalers(kube: FakeKube) -> Autoscalers:
    return Autoscalers(kube, "http://prom:9090", PodMonitorDefaults())


def test_a_refused_scaled_object_is_a_condition_not_a_failed_server() -> None:
    kube = FakeKube()
    kube.served["keda.sh/v1alpha1"] = ["scaledobjects"]
    kube.refusals["ScaledObject"] = ApiException(status=403, reason="Forbidden")
    scalers = autoscalers(kube)
    scalers.apply(OWNER, SPEC)  # no exception: the rest of the server's apply goes on
    condition = scalers.children.condition(("serving", "pool"))
    assert condition is not None and condition.reason == "ScaledObjectFailed"
    assert "403 Forbidden; the pool keeps its current size" in condition.message


def test_the_operator_s_default_prometheus_is_used_when_the_spec_names_none() -> None:
    kube = FakeKube()
    kube.served["keda.sh/v1alpha1"] = ["scaledobjects"]
    autoscalers(kube).apply(OWNER, SPEC)
    (trigger,) = kube.objects[("ScaledObject", "serving", "pool")]["spec"]["triggers"]
    assert trigger["metadata"]["serverAddress"] == "http://prom:9090"


def _deployment(kube: FakeKube, replicas: int) -> None:
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "pool", "namespace": "serving"},
            "spec": {"replicas": replicas, "template": {}},
        }
    )


def test_the_hand_over_never_changes_a_count_the_hpa_holds() -> None:
    kube = FakeKube()
    _deployment(kube, 2)
    kube.scale("Deployment", "serving", "pool", 4, manager="kube-controller-manager")
    # A stale read (2) handed over after the HPA wrote 4: a conflict, answered 409, and the 4 stays.
    autoscalers(kube).hand_over_replicas(OWNER, 2)
    assert kube.objects[("Deployment", "serving", "pool")]["spec"]["replicas"] == 4
    # The count read now: shared with the HPA, unchanged.
    autoscalers(kube).hand_over_replicas(OWNER, 4)
    owners = kube.fields.owners_of(("Deployment", "serving", "pool"), ("spec", "replicas"))
    assert owners == sorted(["kube-controller-manager", HANDOVER_MANAGER])


@pytest.mark.parametrize(
    ("spec", "running", "count"),
    [
        ({"replicas": 3}, {"spec": {"replicas": 3}}, None),
        ({"autoscaling": AUTO}, {"spec": {"replicas": 4}}, 4),
        ({"autoscaling": AUTO}, None, 2),
    ],
)
def test_handover_count(spec: dict[str, Any], running: dict[str, Any] | None, count: int | None) -> None:
    assert handover_count(TritonServerSpec.model_validate(spec), running) == count
