"""TritonServer's `spec.autoscaling`: a KEDA ScaledObject scales the pool's Deployment on Triton's load."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from triton_operator.api.common import ApiModel, cel

MAX_STABILIZATION_S = 3600  # the HPA's own bound on a stabilization window
MIN_ABOVE_MAX = (
    "autoscaling.minReplicas must not exceed autoscaling.maxReplicas: lower minReplicas or raise maxReplicas"
)


class AutoscalingMetric(enum.StrEnum):
    """The load signal the pool is scaled on."""

    # Requests queued or executing, per replica: live (Triton's pending-request gauge).
    PENDING_REQUESTS_PER_REPLICA = "pendingRequestsPerReplica"
    # Mean time a request waited in Triton's queue, microseconds: moves only once a response completes.
    QUEUE_TIME_PER_REQUEST = "queueTimePerRequest"


class AutoscalingTarget(ApiModel):
    """The signal and the value the autoscaler keeps it at."""

    metric: AutoscalingMetric = Field(
        default=AutoscalingMetric.PENDING_REQUESTS_PER_REPLICA,
        description="pendingRequestsPerReplica (the default): requests waiting in Triton's queues across the "
        "pool, divided by its replicas; live, so a burst is seen at the next scrape. queueTimePerRequest: "
        "the mean time a request waited in the queue, in microseconds, over a window of four scrapes; "
        "Triton adds to it only when a response completes, so it lags a burst (server issue 5927). Every "
        "model of the pod counts, a routed model once.",
    )
    value: int = Field(
        ge=1,
        le=3_600_000_000,
        description="The value to keep the metric at: pending requests per replica, or microseconds of "
        "queue time per request. Above it the pool grows, below it shrinks.",
    )


class Autoscaling(ApiModel):
    """Scale the pool between minReplicas and maxReplicas on Triton's load (KEDA must be installed)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    MIN_ABOVE_MAX,
                    field_path=".minReplicas",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    min_replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="The fewest pods (at least 1: the pool never scales to zero).",
    )
    max_replicas: int = Field(ge=1, le=64, description="The most pods.")
    target: AutoscalingTarget = Field(description="The load signal and its target value.")
    scale_up_stabilization_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_STABILIZATION_S,
        description="The HPA grows the pool to the highest count recommended over this many seconds "
        "(0: at once, the HPA's default).",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=MAX_STABILIZATION_S,
        description="The HPA shrinks the pool only to the highest count recommended over this many "
        "seconds (the HPA's default, 300), so a lull does not drop replicas a returning load needs.",
    )
    prometheus_address: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The Prometheus that scrapes the pods (the series need the namespace and tritonserver "
        "labels the operator's PodMonitor adds), e.g. http://prometheus-operated.monitoring:9090. Unset: "
        "the operator's setting (the chart's autoscaling.prometheusAddress).",
    )

    @model_validator(mode="after")
    def _min_within_max(self) -> Autoscaling:
        """Mirror the CEL rule so a model_validate error names the field too."""
        if self.min_replicas > self.max_replicas:
            raise ValueError(MIN_ABOVE_MAX)
        return self


def wanted_replicas(spec: Mapping[str, Any], status: Mapping[str, Any]) -> int | None:
    """The pods a TritonServer asks for, read from the object as stored: spec.replicas (unset: 1), or
    under spec.autoscaling the count its HPA wants (status.autoscaling; None until the operator read it)."""
    if spec.get("autoscaling") is not None:
        desired = (status.get("autoscaling") or {}).get("desiredReplicas")
        return desired if isinstance(desired, int) else None
    replicas = spec.get("replicas", 1)
    return replicas if isinstance(replicas, int) else None
