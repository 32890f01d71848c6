"""The HPA KEDA made, read into status.autoscaling and the Autoscaled condition (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from triton_operator.api.autoscaling import Autoscaling, wanted_replicas
from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.conditions import DecidedCondition, Reason
from triton_operator.observe.autoscaling import autoscaled_condition, autoscaling_status

pytestmark = pytest.mark.unit

AUTO = Autoscaling.model_validate({"minReplicas": 1, "maxReplicas": 4, "target": {"value": 2}})
APPLIED = DecidedCondition(ConditionType.AUTOSCALED, ConditionStatus.TRUE, Reason.SCALING_ACTIVE, "applied")


def hpa(*, active: bool = True, value: str | None = "2500m", **status: Any) -> dict[str, Any]:
    scaling = {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "ok"}
    if not active:
        scaling = {
            "type": "ScalingActive",
            "status": "False",
            "reason": "FailedGetExternalMetric",
            "message": "the HPA was unable to compute the replica count: prometheus query returned empty",
        }
    metrics = [{"type": "External", "external": {"current": {"averageValue": value}}}] if value else []
    return {"status": {"currentMetrics": metrics, "conditions": [scaling], **status}}


def test_status_before_keda_made_the_hpa() -> None:
    assert autoscaling_status("pool", "keda-hpa-pool", AUTO, None) == {
        "scaledObject": "pool",
        "horizontalPodAutoscaler": "keda-hpa-pool",
        "metric": "pendingRequestsPerReplica",
        "targetValue": "2",
    }


def test_status_names_no_scaled_object_that_is_not_in_place() -> None:
    status = autoscaling_status("pool", "keda-hpa-pool", AUTO, None, in_place=False)
    assert status == {"metric": "pendingRequestsPerReplica", "targetValue": "2"}


def test_status_from_a_working_hpa() -> None:
    found = hpa(currentReplicas=2, desiredReplicas=3, lastScaleTime="2026-12-08T01:00:00Z")
    assert autoscaling_status("pool", "keda-hpa-pool", AUTO, found) == {
        "scaledObject": "pool",
        "horizontalPodAutoscaler": "keda-hpa-pool",
        "metric": "pendingRequestsPerReplica",
        "targetValue": "2",
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "lastScaleTime": "2026-12-08T01:00:00Z",
        "currentValue": "2500m",
    }


def test_a_value_metric_is_read_too() -> None:
    found = {"status": {"currentMetrics": [{"type": "External", "external": {"current": {"value": "800"}}}]}}
    assert autoscaling_status("pool", "keda-hpa-pool", AUTO, found)["currentValue"] == "800"


@pytest.mark.parametrize(
    ("applied", "found", "status", "reason", "says"),
    [
        (
            APPLIED,
            hpa(),
            "True",
            "ScalingActive",
            "keeps pendingRequestsPerReplica at 2 with 1 to 4 replicas",
        ),
        (APPLIED, None, "False", "WaitingForAutoscaler", "waiting for KEDA to make HPA keda-hpa-pool"),
        # A scrape gap: Prometheus answers nothing, KEDA errs, the HPA holds its count and says why.
        (APPLIED, hpa(active=False), "False", "ScalingInactive", "keeps 3 replicas: FailedGetExternalMetric"),
        (
            DecidedCondition(
                ConditionType.AUTOSCALED, ConditionStatus.FALSE, Reason.SCALED_OBJECT_KIND_MISSING, "no KEDA"
            ),
            None,
            "False",
            "ScaledObjectKindMissing",
            "no KEDA",
        ),
    ],
)
def test_autoscaled_condition(
    applied: DecidedCondition, found: dict[str, Any] | None, status: str, reason: str, says: str
) -> None:
    decided = autoscaled_condition(applied, "keda-hpa-pool", AUTO, found, replicas=3)
    assert (decided.type, decided.status, decided.reason) == ("Autoscaled", status, reason)
    assert says in decided.message


def test_inactive_scaling_is_said_in_status_too() -> None:
    message = autoscaling_status("pool", "keda-hpa-pool", AUTO, hpa(active=False))["message"]
    assert message.startswith("FailedGetExternalMetric: the HPA was unable to compute the replica count")


@pytest.mark.parametrize(
    ("spec", "status", "wanted"),
    [
        ({}, {}, 1),
        ({"replicas": 3}, {"replicas": 2}, 3),
        ({"replicas": 0}, {}, 0),
        ({"autoscaling": {"maxReplicas": 4}}, {"replicas": 2, "autoscaling": {"desiredReplicas": 3}}, 3),
        ({"autoscaling": {"maxReplicas": 4}}, {"replicas": 2}, None),  # the HPA not read yet
    ],
)
def test_wanted_replicas(spec: dict[str, Any], status: dict[str, Any], wanted: int | None) -> None:
    assert wanted_replicas(spec, status) == wanted
