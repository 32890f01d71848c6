"""spec.autoscaling in whole passes against the fake API server, which keeps server-side apply's field
ownership (tests/support/kubesemantics.FieldOwners): the replica count the HPA writes survives the
operator's next apply of the Deployment, turning autoscaling off gives the count back to spec.replicas,
and a cluster without KEDA keeps the pool as it is and says so once."""

from __future__ import annotations

from typing import Any

import pytest
from triton_operator.handlers import tritonserver as server_handlers
from triton_operator.kube.rest import FIELD_MANAGER
from triton_operator.reconcile.autoscaling import HANDOVER_MANAGER, Autoscalers

from tests.support.scenario import NS, World, server_spec

pytestmark = pytest.mark.unit

KEDA = "keda.sh/v1alpha1"
HPA_MANAGER = "kube-controller-manager"  # the HPA controller writes through the scale subresource
PROM = "http://prometheus-operated.monitoring:9090"
AUTOSCALING = {"minReplicas": 2, "maxReplicas": 5, "target": {"value": 4}, "prometheusAddress": PROM}


def autoscaled_spec(**extra: Any) -> dict[str, Any]:
    spec = {k: v for k, v in server_spec().items() if k != "replicas"}
    return {**spec, "autoscaling": AUTOSCALING, **extra}


def replicas(world: World) -> int:
    return int(world.body("Deployment", "triton")["spec"]["replicas"])


def replicas_owners(world: World) -> list[str]:
    return world.kube.fields.owners_of(("Deployment", NS, "triton"), ("spec", "replicas"))


def keda_makes_the_hpa(world: World, current: int, desired: int) -> None:
    """What KEDA and the HPA controller do: an HPA owned by the ScaledObject, the Deployment scaled."""
    scaled_object = world.body("ScaledObject", "triton")
    world.kube.add(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "keda-hpa-triton",
                "namespace": NS,
                "ownerReferences": [world.kube._owner(scaled_object)],
            },
            "spec": {"minReplicas": 2, "maxReplicas": 5},
            "status": {
                "currentReplicas": current,
                "desiredReplicas": desired,
                "lastScaleTime": "2026-12-08T01:00:00Z",
                "currentMetrics": [{"type": "External", "external": {"current": {"averageValue": "6"}}}],
                "conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}],
            },
        }
    )
    world.kube.scale("Deployment", NS, "triton", desired, manager=HPA_MANAGER)


def test_the_hpa_owns_the_count_until_autoscaling_is_turned_off(world: World) -> None:
    world.kube.served[KEDA] = ["scaledobjects", "scaledjobs"]
    world.add_server("triton", autoscaled_spec())
    world.rounds(2)

    scaled_object = world.body("ScaledObject", "triton")
    assert scaled_object["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "triton",
    }
    assert scaled_object["metadata"]["ownerReferences"][0]["name"] == "triton"
    # A new Deployment starts at the fewest replicas, a count the operator's own manager does not hold.
    assert replicas(world) == 2
    assert replicas_owners(world) == [HANDOVER_MANAGER]

    keda_makes_the_hpa(world, current=2, desired=4)
    # The Deployment controller makes the two pods; while they start, the pool serves at its floor: Ready
    # stays True (Argo CD Healthy through a ramp) and says why, nothing reads as rolling out.
    world.kube.sync_deployment(NS, "triton")
    world.server_pass("triton")
    assert world.condition("triton", "Ready", "TritonServer") == ("True", "ScalingUp")
    assert world.condition("triton", "Progressing", "TritonServer") == ("False", "RolloutComplete")
    world.until(lambda w: w.condition("triton", "Ready", "TritonServer") == ("True", "AllReplicasReady"))
    # A new spec: the operator applies the Deployment again (a new pod label rolls the pods) ...
    world.set_spec("TritonServer", "triton", autoscaled_spec(podLabels={"team": "a"}))
    world.rounds(2)
    assert world.body("Deployment", "triton")["spec"]["template"]["metadata"]["labels"]["team"] == "a"
    # ... and the HPA's count stays: the operator's apply neither sets nor owns spec.replicas.
    assert replicas(world) == 4
    assert FIELD_MANAGER not in replicas_owners(world)
    # ... and so does the drift period's apply.
    world.clock.advance(server_handlers.DRIFT_PERIOD_S + 1)
    applies = len([c for c in world.kube.calls if c.verb == "apply" and c.kind == "Deployment"])
    world.rounds(1)
    assert len([c for c in world.kube.calls if c.verb == "apply" and c.kind == "Deployment"]) > applies
    assert replicas(world) == 4

    server = world.body("TritonServer", "triton")
    assert "replicas" not in server["spec"]  # nothing written to what Git holds
    assert server["status"]["autoscaling"] == {
        "scaledObject": "triton",
        "horizontalPodAutoscaler": "keda-hpa-triton",
        "metric": "pendingRequestsPerReplica",
        "targetValue": "4",
        "currentReplicas": 2,
        "desiredReplicas": 4,
        "lastScaleTime": "2026-12-08T01:00:00Z",
        "currentValue": "6",
    }
    assert world.condition("triton", "Autoscaled", "TritonServer") == ("True", "ScalingActive")

    # Autoscaling off: spec.replicas is the count again, the ScaledObject (and KEDA's HPA with it) goes.
    world.set_spec("TritonServer", "triton", server_spec(replicas=3))
    world.rounds(1)
    assert replicas(world) == 3
    assert FIELD_MANAGER in replicas_owners(world) and HPA_MANAGER not in replicas_owners(world)
    assert world.kube.get("ScaledObject", NS, "triton") is None
    assert world.kube.get("HorizontalPodAutoscaler", NS, "keda-hpa-triton") is None
    status = world.status("triton", "TritonServer")
    assert "autoscaling" not in status
    assert "Autoscaled" not in [c["type"] for c in status["conditions"]]


@pytest.mark.parametrize("hand_over", [True, False], ids=["handed-over", "without-hand-over"])
def test_turning_autoscaling_on_keeps_the_pool_s_size(
    world: World, monkeypatch: pytest.MonkeyPatch, hand_over: bool
) -> None:
    """The operator alone owned spec.replicas (3); its next apply leaves it out. Without the hand-over
    the API server would drop the field and default it to 1, taking two pods away before the HPA acts."""
    world.kube.served[KEDA] = ["scaledobjects"]
    world.add_server("triton", server_spec(replicas=3))
    world.rounds(2)
    assert (replicas(world), replicas_owners(world)) == (3, [FIELD_MANAGER])
    if not hand_over:
        monkeypatch.setattr(Autoscalers, "hand_over_replicas", lambda self, owner, count: None)

    world.set_spec("TritonServer", "triton", autoscaled_spec())
    world.rounds(1)
    assert replicas(world) == (3 if hand_over else 1)


def test_without_keda_the_pool_keeps_its_size_and_says_so_once(world: World) -> None:
    world.add_server("triton", server_spec(replicas=3))
    world.rounds(2)
    world.set_spec("TritonServer", "triton", autoscaled_spec())
    world.rounds(2)
    for _ in range(2):  # the drift period applies again: no second Event, no ScaledObject
        world.clock.advance(server_handlers.DRIFT_PERIOD_S + 1)
        world.rounds(1)

    assert replicas(world) == 3
    assert world.kube.get("ScaledObject", NS, "triton") is None
    assert world.condition("triton", "Autoscaled", "TritonServer") == ("False", "ScaledObjectKindMissing")
    told = [e for e in world.event_list() if e[2] == "ScaledObjectKindMissing"]
    assert [(name, kind) for name, kind, _, _ in told] == [("triton", "Normal")]
    assert "install KEDA" in told[0][3] and "the pool keeps its current size" in told[0][3]
    # Not the server's fault: it serves.
    assert world.condition("triton", "Ready", "TritonServer")[0] == "True"
    # status.autoscaling names no ScaledObject that is not there.
    assert world.status("triton", "TritonServer")["autoscaling"] == {
        "metric": "pendingRequestsPerReplica",
        "targetValue": "4",
    }


def test_without_a_prometheus_address_the_condition_names_both_places(world: World) -> None:
    world.kube.served[KEDA] = ["scaledobjects"]
    spec = autoscaled_spec()
    spec["autoscaling"] = {k: v for k, v in AUTOSCALING.items() if k != "prometheusAddress"}
    world.add_server("triton", spec)
    world.rounds(2)
    assert world.kube.get("ScaledObject", NS, "triton") is None
    status, reason = world.condition("triton", "Autoscaled", "TritonServer")
    assert (status, reason) == ("False", "PrometheusAddressMissing")
    message = next(
        c["message"]
        for c in world.status("triton", "TritonServer")["conditions"]
        if c["type"] == "Autoscaled"
    )
    assert "spec.autoscaling.prometheusAddress" in message and "autoscaling.prometheusAddress" in message


def test_a_server_made_again_is_told_afresh_that_keda_is_missing(world: World) -> None:
    world.add_server("triton", autoscaled_spec())
    world.rounds(1)
    world.kube.delete("TritonServer", NS, "triton")
    world.add_server("triton", autoscaled_spec())
    world.rounds(1)
    told = [e for e in world.event_list() if e[2] == "ScaledObjectKindMissing"]
    assert len(told) == 2  # once for each server of that name
