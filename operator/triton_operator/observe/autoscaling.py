"""What a TritonServer's autoscaler says: the HPA KEDA made from its ScaledObject, read into
`status.autoscaling` and the `Autoscaled` condition.

Pure: takes the HPA (autoscaling/v2) as the API returned it, or None; no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triton_operator.api.autoscaling import Autoscaling
from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.conditions import DecidedCondition, Reason

Obj = Mapping[str, Any]


def _hpa_condition(hpa: Obj, ctype: str) -> Obj:
    return next((c for c in (hpa.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def current_value(hpa: Obj) -> str | None:
    """The metric as the HPA last read it (its one external metric: per pod, or as is)."""
    for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
        current = (metric.get("external") or {}).get("current") or {}
        value = current.get("averageValue", current.get("value"))
        if value is not None:
            return str(value)
    return None


def cannot_scale(hpa: Obj) -> str | None:
    """Why the HPA cannot compute a count (ScalingActive False: no metric, e.g. an empty Prometheus
    answer during a scrape gap, when it holds the count), None when it can."""
    active = _hpa_condition(hpa, "ScalingActive")
    if active.get("status") != "False":
        return None
    return f"{active.get('reason') or 'ScalingInactive'}: {active.get('message') or 'no reason given'}"


def autoscaling_status(
    name: str, hpa_name: str, autoscaling: Autoscaling, hpa: Obj | None, *, in_place: bool = True
) -> dict[str, Any]:
    """status.autoscaling: the spec's target, the ScaledObject and HPA names once it is `in_place` (not
    where KEDA is missing), and, once KEDA made it, what the HPA says."""
    out: dict[str, Any] = {
        "metric": autoscaling.target.metric.value,
        "targetValue": str(autoscaling.target.value),
    }
    if in_place:
        out = {"scaledObject": name, "horizontalPodAutoscaler": hpa_name, **out}
    if hpa is None:
        return out
    status = hpa.get("status") or {}
    for field in ("currentReplicas", "desiredReplicas"):
        if isinstance(status.get(field), int):
            out[field] = status[field]
    if status.get("lastScaleTime"):
        out["lastScaleTime"] = str(status["lastScaleTime"])
    value = current_value(hpa)
    if value is not None:
        out["currentValue"] = value
    problem = cannot_scale(hpa)
    if problem is not None:
        out["message"] = problem
    return out


def autoscaled_condition(
    applied: DecidedCondition, hpa_name: str, autoscaling: Autoscaling, hpa: Obj | None, replicas: int
) -> DecidedCondition:
    """Autoscaled: the apply's verdict while the ScaledObject is not in place (KEDA missing, refused, no
    Prometheus address), else what its HPA says. `replicas`: the pool's pods now (it keeps them)."""
    if applied.status != ConditionStatus.TRUE:
        return applied
    target = autoscaling.target
    if hpa is None:
        return DecidedCondition(
            ConditionType.AUTOSCALED,
            ConditionStatus.FALSE,
            Reason.WAITING_FOR_AUTOSCALER,
            f"waiting for KEDA to make HPA {hpa_name} from the ScaledObject; the pool keeps {replicas} "
            "replicas",
        )
    problem = cannot_scale(hpa)
    if problem is not None:
        return DecidedCondition(
            ConditionType.AUTOSCALED,
            ConditionStatus.FALSE,
            Reason.SCALING_INACTIVE,
            f"HPA {hpa_name} cannot read {target.metric.value} and keeps {replicas} replicas: {problem}",
        )
    return DecidedCondition(
        ConditionType.AUTOSCALED,
        ConditionStatus.TRUE,
        Reason.SCALING_ACTIVE,
        f"HPA {hpa_name} keeps {target.metric.value} at {target.value} with {autoscaling.min_replicas} to "
        f"{autoscaling.max_replicas} replicas",
    )
