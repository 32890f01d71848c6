"""TritonServer spec/status models: defaults, camelCase wire format, bad input rejected with the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from triton_operator.api.crdgen import crd_for
from triton_operator.api.tritonserver import (
    DEFAULT_IMAGE,
    OPERATOR_OWNED_FLAGS,
    TRITONSERVER,
    ModelControlMode,
    TritonServerSpec,
    TritonServerStatus,
)

from tests.support.cel import with_defaults

pytestmark = pytest.mark.unit


def test_defaults_are_what_the_brief_promises() -> None:
    spec = TritonServerSpec()
    assert spec.image == DEFAULT_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"
    # Unset (no schema default, so that spec.autoscaling can exclude it): one pod.
    assert spec.replicas is None and spec.replica_count() == 1 and spec.autoscaling is None
    assert spec.resources.gpus == 1
    assert spec.model_repository.size == "10Gi"
    assert [m.value for m in spec.model_repository.access_modes] == ["ReadWriteOnce"]
    assert spec.model_repository.retain_on_delete is True
    assert spec.triton.model_control_mode is ModelControlMode.EXPLICIT
    # Off: with strict readiness one failing (or loading) model takes every pod out of the Service.
    assert spec.triton.strict_readiness is False
    assert (
        spec.triton.metrics.enabled,
        spec.triton.metrics.summary_latencies,
        spec.triton.metrics.gpu_metrics,
    ) == (
        True,
        True,
        True,
    )
    assert spec.shared_memory_size == "1Gi"
    assert spec.startup.budget_seconds == 600
    assert spec.service.type.value == "ClusterIP"


def test_crd_defaults_match_the_model_defaults() -> None:
    """An empty TritonServer defaulted by the apiserver parses to exactly the pydantic defaults."""
    schema = crd_for(TRITONSERVER)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec_schema = schema["properties"]["spec"]
    defaulted = with_defaults(spec_schema, dict(spec_schema["default"]))
    assert TritonServerSpec.model_validate(defaulted) == TritonServerSpec()
    # Everything the model defaults (other than None) is also defaulted by the CRD, so `kubectl get -o yaml`
    # shows the values the operator acts on.
    assert defaulted == TritonServerSpec().model_dump(mode="json", exclude_none=True)


def test_camel_case_on_the_wire_and_snake_case_in_python() -> None:
    spec = TritonServerSpec.model_validate(
        {"modelRepository": {"existingClaim": "shared-models"}, "triton": {"logVerbose": 2}}
    )
    assert spec.model_repository.existing_claim == "shared-models"
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["modelRepository"]["existingClaim"] == "shared-models"
    assert dumped["triton"]["logVerbose"] == 2
    assert TritonServerSpec(replicas=3).replicas == 3  # populate_by_name


@pytest.mark.parametrize("quantity", ["500m", "2", "1.5", ".5", "16Gi", "512Mi", "1e3", "10G"])
def test_quantities_accepted(quantity: str) -> None:
    spec = TritonServerSpec.model_validate(
        {"sharedMemorySize": quantity, "resources": {"limits": {"cpu": quantity}}}
    )
    assert spec.shared_memory_size == quantity


@pytest.mark.parametrize("gpus", [1, 16])
def test_gpu_bounds_inclusive(gpus: int) -> None:
    assert TritonServerSpec.model_validate({"resources": {"gpus": gpus}}).resources.gpus == gpus


@pytest.mark.parametrize(
    ("spec", "loc", "fragment"),
    [
        pytest.param({"replicas": -1}, ("replicas",), "greater than or equal to 0", id="negative-replicas"),
        pytest.param({"replicas": 65}, ("replicas",), "less than or equal to 64", id="too-many-replicas"),
        pytest.param(
            {"resources": {"gpus": 0}}, ("resources", "gpus"), "greater than or equal to 1", id="gpus=0"
        ),
        pytest.param(
            {"resources": {"gpus": 17}}, ("resources", "gpus"), "less than or equal to 16", id="gpus>16"
        ),
        pytest.param(
            {"triton": {"modelControlMode": "auto"}},
            ("triton", "modelControlMode"),
            "'explicit', 'poll' or 'none'",
            id="unknown-model-control-mode",
        ),
        pytest.param(
            {"resources": {"limits": {"memory": "16GB"}}},
            ("resources", "limits", "memory"),
            "not a Kubernetes quantity; write it like 500m",
            id="malformed-quantity",
        ),
        pytest.param(
            {"sharedMemorySize": "-1Gi"}, ("sharedMemorySize",), "Kubernetes quantity", id="negative-shm"
        ),
        pytest.param(
            {"modelRepository": {"size": "lots"}},
            ("modelRepository", "size"),
            "Kubernetes quantity",
            id="pvc-size",
        ),
        pytest.param(
            {"triton": {"extraArgs": ["--log-info=true", "--model-repository=/elsewhere"]}},
            ("triton", "extraArgs"),
            "sets --model-repository, which the operator owns",
            id="owned-flag",
        ),
        pytest.param(
            {"triton": {"extraArgs": ["--http-port", "9000"]}},
            ("triton", "extraArgs"),
            "--http-port",
            id="owned-flag-separate-value",
        ),
        pytest.param(
            {"triton": {"extraArgs": ["--model-store=/x"]}},
            ("triton", "extraArgs"),
            "--model-store",
            id="owned-flag-alias",
        ),
        pytest.param(
            {"triton": {"logVerbose": 4}}, ("triton", "logVerbose"), "less than or equal to 3", id="log"
        ),
        pytest.param(
            {"podLabels": {"app.kubernetes.io/instance": "other"}},
            ("podLabels",),
            "podLabels must not set app.kubernetes.io/instance",
            id="selector-label",
        ),
        pytest.param(
            {"envFrom": [{"prefix": "X_"}]}, ("envFrom", 0), "exactly one of secretRef", id="envfrom-none"
        ),
        pytest.param(
            {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            ("env", 0),
            "either value or valueFrom",
            id="env-both",
        ),
        pytest.param(
            {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2000m"}}},
            ("resources",),
            "resources.requests.cpu must not exceed resources.limits.cpu",
            id="request-above-limit",
        ),
        pytest.param(
            {"replicaCount": 2}, ("replicaCount",), "Extra inputs are not permitted", id="typo-field"
        ),
        pytest.param(
            {"modelRepository": {"accessModes": []}},
            ("modelRepository", "accessModes"),
            "at least 1",
            id="modes",
        ),
        pytest.param(
            {"startup": {"budgetSeconds": 5}}, ("startup", "budgetSeconds"), "greater than", id="budget"
        ),
        pytest.param({"image": "has space:1"}, ("image",), "pattern", id="image-with-space"),
        pytest.param(
            {"autoscaling": {"maxReplicas": 4, "target": {"value": 0}}},
            ("autoscaling", "target", "value"),
            "greater than or equal to 1",
            id="autoscaling-target-0",
        ),
        pytest.param(
            {"autoscaling": {"maxReplicas": 4, "target": {"metric": "gpuUtilization", "value": 1}}},
            ("autoscaling", "target", "metric"),
            "'pendingRequestsPerReplica' or 'queueTimePerRequest'",
            id="autoscaling-unknown-metric",
        ),
        pytest.param(
            {"autoscaling": {"minReplicas": 0, "maxReplicas": 4, "target": {"value": 1}}},
            ("autoscaling", "minReplicas"),
            "greater than or equal to 1",
            id="autoscaling-to-zero",
        ),
        pytest.param(
            {"autoscaling": {"maxReplicas": 4, "target": {"value": 1}, "prometheusAddress": "prom:9090"}},
            ("autoscaling", "prometheusAddress"),
            "pattern",
            id="autoscaling-address-without-scheme",
        ),
    ],
)
def test_bad_spec_is_rejected_with_field_path(
    spec: dict[str, Any], loc: tuple[Any, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TritonServerSpec.model_validate(spec)
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [loc], errors
    assert fragment in errors[0]["msg"]


def test_extra_args_that_merely_look_similar_are_allowed() -> None:
    args = ["--model-load-thread-count=4", "--http-thread-count=8", "--pinned-memory-pool-byte-size=0"]
    assert TritonServerSpec.model_validate({"triton": {"extraArgs": args}}).triton.extra_args == args


def test_every_owned_flag_is_rejected() -> None:
    for flag in OPERATOR_OWNED_FLAGS:
        with pytest.raises(ValidationError, match=flag):
            TritonServerSpec.model_validate({"triton": {"extraArgs": [f"{flag}=1"]}})


def test_status_tolerates_unknown_fields_and_dumps_camel_case() -> None:
    status = TritonServerStatus.model_validate(
        {
            "observedGeneration": 3,
            "readyReplicas": 1,
            "kopf": {"progress": {}},
            "fieldFromNewerOperator": True,
            "metrics": {"total": {"p99LatencyMs": 12.5}, "perPod": [{"pod": "a", "inferenceRate": 3.0}]},
        }
    )
    dumped = status.model_dump(mode="json", exclude_none=True)
    assert dumped["observedGeneration"] == 3
    assert dumped["metrics"]["total"] == {"p99LatencyMs": 12.5}
    assert dumped["metrics"]["perPod"] == [{"pod": "a", "inferenceRate": 3.0}]
    assert "fieldFromNewerOperator" not in dumped


def test_autoscaling_bounds_are_in_the_crd_schema() -> None:
    """A target of 0, a pool autoscaled to zero and an unknown metric are refused by the CRD's schema
    itself (the apiserver names the field: spec.autoscaling.target.value ... should be greater than or
    equal to 1); min above max and spec.replicas beside autoscaling by CEL (test_validation_rules.py)."""
    schema = crd_for(TRITONSERVER)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    autoscaling = schema["properties"]["spec"]["properties"]["autoscaling"]
    target = autoscaling["properties"]["target"]["properties"]
    assert target["value"]["minimum"] == 1
    assert target["metric"]["enum"] == ["pendingRequestsPerReplica", "queueTimePerRequest"]
    assert target["metric"]["default"] == "pendingRequestsPerReplica"
    assert autoscaling["properties"]["minReplicas"]["minimum"] == 1
    assert autoscaling["required"] == ["maxReplicas", "target"]
    assert "default" not in schema["properties"]["spec"]["properties"]["replicas"]


def test_replica_counts_with_and_without_autoscaling() -> None:
    auto = {"minReplicas": 2, "maxReplicas": 6, "target": {"value": 4}}
    scaled = TritonServerSpec.model_validate({"autoscaling": auto})
    assert (scaled.replica_count(), scaled.fewest_replicas(), scaled.most_replicas()) == (None, 2, 6)
    fixed = TritonServerSpec.model_validate({"replicas": 3})
    assert (fixed.replica_count(), fixed.fewest_replicas(), fixed.most_replicas()) == (3, 3, 3)
    zero = TritonServerSpec.model_validate({"replicas": 0})
    assert zero.replica_count() == 0
