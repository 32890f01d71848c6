"""Rendered children of a TritonServer: golden files, Kubernetes schema validity, behaviour users rely on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.render.labels import label_selector, owner_labels, selector_labels, volume_labels
from triton_operator.render.server import (
    render_all,
    render_deployment,
    render_pdb,
    render_pvc,
    render_service,
    service_endpoints,
    triton_args,
)

from tests.support.render_checks import check_against_model, deserialize

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "render"
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

MINIMAL: dict[str, Any] = {}
MAXIMAL: dict[str, Any] = {
    "image": "registry.example.com/triton/tritonserver:24.10-py3-custom",
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "ngc-credentials"}],
    "replicas": 3,
    "resources": {
        "gpus": 2,
        "requests": {"cpu": "4", "memory": "32Gi"},
        "limits": {"cpu": "8", "memory": "64Gi"},
    },
    "gpuProduct": "NVIDIA-A100-SXM4-80GB",
    "nodeSelector": {"node.kubernetes.io/instance-type": "p4d.24xlarge"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "llm"}},
                    },
                }
            ]
        }
    },
    "modelRepository": {
        "size": "200Gi",
        "storageClassName": "fast-rwx",
        "accessModes": ["ReadWriteMany"],
        "retainOnDelete": False,
    },
    "triton": {
        "modelControlMode": "explicit",
        "strictReadiness": False,
        "metrics": {"enabled": True, "summaryLatencies": True, "gpuMetrics": True, "intervalMs": 1000},
        "logVerbose": 1,
        "exitTimeoutSeconds": 60,
        "extraArgs": ["--pinned-memory-pool-byte-size=268435456", "--cuda-memory-pool-byte-size=0:536870912"],
    },
    "env": [
        {"name": "HF_HOME", "value": "/tmp/hf"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "api"}}},
    ],
    "envFrom": [
        {"secretRef": {"name": "s3-credentials"}},
        {"configMapRef": {"name": "tuning", "optional": True}},
    ],
    "sharedMemorySize": "8Gi",
    "startup": {"budgetSeconds": 1800},
    "service": {
        "type": "LoadBalancer",
        "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"},
    },
    "podLabels": {"team": "search"},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "serviceAccountName": "triton",
}
CASES = {"minimal": MINIMAL, "maximal": MAXIMAL}


def _render(raw: dict[str, Any], name: str = "llm") -> list[dict[str, Any]]:
    return render_all(name, "serving", UID, TritonServerSpec.model_validate(raw))


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def _container(raw: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _by_kind(_render(raw))["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    """Full expected objects; regenerate with UPDATE_GOLDEN=1 and review the diff."""
    rendered = _render(CASES[case])
    path = GOLDEN / f"tritonserver-{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(rendered, sort_keys=False, width=110))
    expected = list(yaml.safe_load_all(path.read_text()))
    assert rendered == expected


MODEL_OF_KIND = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_object_fits_the_kubernetes_schema(case: str) -> None:
    objects = _render(CASES[case])
    assert {obj["kind"] for obj in objects} <= set(MODEL_OF_KIND)
    for obj in objects:
        type_name = MODEL_OF_KIND[obj["kind"]]
        check_against_model(obj, type_name, obj["kind"])
        model = deserialize(obj, type_name)  # raises on missing required fields
        assert model.metadata.name == obj["metadata"]["name"]


def test_schema_check_fails_on_unknown_and_mistyped_fields() -> None:
    """The checker above is not vacuous."""
    deployment = _by_kind(_render(MINIMAL))["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["containerport"] = 8000
    with pytest.raises(AssertionError, match="containerport"):
        check_against_model(deployment, "V1Deployment", "Deployment")
    del container["ports"][0]["containerport"]
    container["resources"]["limits"]["nvidia.com/gpu"] = 1
    with pytest.raises(AssertionError, match="expected str"):
        check_against_model(deployment, "V1Deployment", "Deployment")
    container["resources"]["limits"]["nvidia.com/gpu"] = "1"
    del container["name"]
    with pytest.raises(ValueError, match="name"):
        deserialize(deployment, "V1Deployment")


def test_minimal_renders_pvc_deployment_service_without_pdb() -> None:
    kinds = [obj["kind"] for obj in _render(MINIMAL)]
    assert kinds == ["PersistentVolumeClaim", "Deployment", "Service"]
    assert [obj["kind"] for obj in _render(MAXIMAL)] == [*kinds, "PodDisruptionBudget"]


def test_labels_and_selector() -> None:
    objects = _by_kind(_render(MAXIMAL))
    selector = selector_labels("llm")
    assert selector == {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": "llm",
        "app.kubernetes.io/component": "server",
    }
    for kind, obj in objects.items():
        expected = volume_labels("llm", UID) if kind == "PersistentVolumeClaim" else owner_labels("llm", UID)
        assert obj["metadata"]["labels"] == expected
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "triton-operator"
        assert "ownerReferences" not in obj["metadata"]
    deployment = objects["Deployment"]
    assert deployment["spec"]["selector"] == {"matchLabels": selector}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items() and pod_labels["team"] == "search"
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": selector}
    parsed = dict(pair.split("=") for pair in label_selector("llm").split(","))
    assert parsed == selector


@pytest.mark.parametrize("retain", [True, False])
def test_argo_cd_label_tracking_never_claims_the_model_pvc(retain: bool) -> None:
    """Regression (Argo CD `resourceTrackingMethod: label` pruned the models): Argo CD takes an object
    labelled app.kubernetes.io/instance=<app> for the Application's own and prunes it when git lacks it,
    unless it has an owner reference. The PVC may have none (retainOnDelete), so it must not carry it."""
    raw = {**MAXIMAL, "modelRepository": {**MAXIMAL["modelRepository"], "retainOnDelete": retain}}
    pvc = _by_kind(_render(raw))["PersistentVolumeClaim"]
    assert "app.kubernetes.io/instance" not in pvc["metadata"]["labels"]
    assert pvc["metadata"]["labels"]["tritonoperator.dev/server"] == "llm"


def test_triton_args() -> None:
    args = triton_args(TritonServerSpec.model_validate(MAXIMAL))
    assert args[:6] == [
        "--model-repository=/models",
        "--model-control-mode=explicit",
        "--strict-readiness=false",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    assert "--metrics-config=summary_latencies=true" in args
    assert "--metrics-interval-ms=1000" in args and "--log-verbose=1" in args
    assert "--exit-timeout-secs=60" in args
    assert (
        args[-2:] == MAXIMAL["triton"]["extraArgs"]
    )  # last, so they may tune anything the operator does not own
    container = _container(MAXIMAL)
    assert container["command"] == ["tritonserver"] and container["args"] == args


def test_metrics_switched_off() -> None:
    raw = {"triton": {"metrics": {"enabled": False}}}
    args = triton_args(TritonServerSpec.model_validate(raw))
    assert "--allow-metrics=false" in args and not any(a.startswith("--metrics-config") for a in args)
    assert [p["name"] for p in _container(raw)["ports"]] == ["http", "grpc"]
    service = _by_kind(_render(raw))["Service"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http", "grpc"]
    assert "metrics" not in service_endpoints("llm", "serving", TritonServerSpec.model_validate(raw))


@pytest.mark.parametrize("gpus", [1, 2, 16])
def test_gpus_requested_and_limited_and_no_surge(gpus: int) -> None:
    raw = {"resources": {"gpus": gpus}}
    resources = _container(raw)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == str(gpus)
    strategy = _by_kind(_render(raw))["Deployment"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert "--allow-gpu-metrics=true" in triton_args(TritonServerSpec.model_validate(raw))


@pytest.mark.parametrize("budget", [30, 600, 605, 1800, 86400])
def test_startup_probe_covers_the_budget(budget: int) -> None:
    raw = {"startup": {"budgetSeconds": budget}}
    probe = _container(raw)["startupProbe"]
    assert probe["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    covered = probe["failureThreshold"] * probe["periodSeconds"]
    assert budget <= covered < budget + probe["periodSeconds"]
    # The Deployment's progress deadline must not fire while a pod is still inside its startup budget.
    assert _by_kind(_render(raw))["Deployment"]["spec"]["progressDeadlineSeconds"] > covered


def test_probes_and_ports_are_named() -> None:
    container = _container(MINIMAL)
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    service = _by_kind(_render(MINIMAL))["Service"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (8000, "http"),
        "grpc": (8001, "grpc"),
        "metrics": (8002, "metrics"),
    }


def test_volumes_models_and_shared_memory() -> None:
    pod = _by_kind(_render(MAXIMAL))["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "llm-models"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/models"]["name"] == "models" and mounts["/dev/shm"]["name"] == "dshm"


def test_existing_claim_replaces_the_pvc() -> None:
    spec = TritonServerSpec.model_validate({"modelRepository": {"existingClaim": "shared-models"}})
    labels = owner_labels("llm", UID)
    assert render_pvc("llm", "serving", spec, owner_labels=labels) is None
    deployment = render_deployment("llm", "serving", spec, owner_labels=labels)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "shared-models"


def test_pvc_from_spec() -> None:
    pvc = _by_kind(_render(MAXIMAL))["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == "llm-models"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "200Gi"}},
        "storageClassName": "fast-rwx",
    }


@pytest.mark.parametrize(("replicas", "has_pdb"), [(0, False), (1, False), (2, True), (64, True)])
def test_pdb_only_for_several_replicas(replicas: int, has_pdb: bool) -> None:
    spec = TritonServerSpec(replicas=replicas)
    pdb = render_pdb("llm", "serving", spec, owner_labels=owner_labels("llm", UID))
    assert (pdb is not None) == has_pdb
    if pdb is not None:
        assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(("max_replicas", "has_pdb"), [(1, False), (2, True)])
def test_pdb_for_an_autoscaled_pool_that_may_grow(max_replicas: int, has_pdb: bool) -> None:
    spec = TritonServerSpec.model_validate(
        {"autoscaling": {"maxReplicas": max_replicas, "target": {"value": 4}}}
    )
    assert (render_pdb("llm", "serving", spec, owner_labels=owner_labels("llm", UID)) is not None) == has_pdb


@pytest.mark.parametrize(
    ("raw", "replicas"),
    [
        ({}, 1),
        ({"replicas": 3}, 3),
        ({"replicas": 0}, 0),
        ({"autoscaling": {"maxReplicas": 4, "target": {"value": 4}}}, None),
    ],
)
def test_deployment_replicas_left_out_under_autoscaling(raw: dict[str, Any], replicas: int | None) -> None:
    """Under spec.autoscaling the HPA owns the count: the applied Deployment does not set it at all."""
    deployment = _by_kind(_render(raw))["Deployment"]
    assert deployment["spec"].get("replicas") == replicas
    assert ("replicas" in deployment["spec"]) == (replicas is not None)


def test_scheduling_fields() -> None:
    pod = _by_kind(_render(MAXIMAL))["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "p4d.24xlarge",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    }
    assert pod["tolerations"] == MAXIMAL["tolerations"]
    assert pod["affinity"] == MAXIMAL["affinity"]
    assert pod["serviceAccountName"] == "triton"
    assert pod["imagePullSecrets"] == [{"name": "ngc-credentials"}]
    assert pod["terminationGracePeriodSeconds"] > MAXIMAL["triton"]["exitTimeoutSeconds"]


def test_security_context_meets_restricted_pod_security() -> None:
    pod = _by_kind(_render(MINIMAL))["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def _hash(raw: dict[str, Any]) -> str:
    template = _by_kind(_render(raw))["Deployment"]["spec"]["template"]
    value: str = template["metadata"]["annotations"]["tritonoperator.dev/spec-hash"]
    return value


def test_spec_hash_follows_the_pod_template_only() -> None:
    base = _hash(MINIMAL)
    assert base == _hash(MINIMAL)  # stable
    assert _hash({"replicas": 5}) == base  # scaling does not restart pods
    assert _hash({"service": {"type": "NodePort"}}) == base
    assert _hash({"modelRepository": {"retainOnDelete": False}}) == base
    for change in (
        {"image": "nvcr.io/nvidia/tritonserver:24.11-py3"},
        {"resources": {"gpus": 2}},
        {"triton": {"logVerbose": 1}},
        {"podAnnotations": {"a": "b"}},
        {"sharedMemorySize": "2Gi"},
    ):
        assert _hash(change) != base, change


def test_service_type_and_annotations() -> None:
    service = _by_kind(_render(MAXIMAL))["Service"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == MAXIMAL["service"]["annotations"]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["appProtocol"] == "kubernetes.io/h2c"
    spec = TritonServerSpec()
    assert render_service("llm", "serving", spec, owner_labels={})["metadata"]["name"] == "llm"
    assert service_endpoints("llm", "serving", spec) == {
        "http": "llm.serving.svc:8000",
        "grpc": "llm.serving.svc:8001",
        "metrics": "http://llm.serving.svc:8002/metrics",
    }


def test_env_passed_through() -> None:
    container = _container(MAXIMAL)
    assert container["env"] == MAXIMAL["env"]
    assert container["envFrom"] == MAXIMAL["envFrom"]
    assert container["imagePullPolicy"] == "Always"
