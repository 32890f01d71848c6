"""`helm template` of the chart: valid Kubernetes objects, a restricted operator pod, least-privilege RBAC."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import yaml

from tests.support.chart import MODEL_OF_KIND, NAMESPACE, ROOT, render_chart, set_args
from tests.support.render_checks import check_against_model, deserialize

pytestmark = pytest.mark.unit

IMAGE = "ghcr.io/tritonoperator/triton-operator:0.1.0"
CRUD = ["get", "list", "watch", "create", "update", "patch", "delete"]
READ = ["get", "list", "watch"]
# What the operator does, rule by rule; anything more is a privilege it does not use.
WORKLOAD_RULES = [
    {
        "apiGroups": ["tritonoperator.dev"],
        "resources": ["tritonservers"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    # A model served through a Gateway is placed on each server as a TritonModel the operator creates.
    {
        "apiGroups": ["tritonoperator.dev"],
        "resources": ["tritonmodels"],
        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
    },
    {
        "apiGroups": ["tritonoperator.dev"],
        "resources": ["tritonservers/status", "tritonmodels/status"],
        "verbs": ["patch", "update"],
    },
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": CRUD},
    {"apiGroups": [""], "resources": ["services", "persistentvolumeclaims"], "verbs": CRUD},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": CRUD},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes", "grpcroutes"], "verbs": CRUD},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": ["get"]},
    {
        "apiGroups": ["monitoring.coreos.com"],
        "resources": ["podmonitors"],
        "verbs": ["get", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["get", "create", "update", "patch", "delete"],
    },
    # Read by name only (status.autoscaling): it never lists, watches or writes an HPA.
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": CRUD},
    {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
DISCOVERY_RULES = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": READ},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": READ},
]
# Leader election: create any Lease (create cannot be limited by name), get and update only its own.
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["triton-operator"],
        "verbs": ["get", "update"],
    },
]
LEASE_ROLE = "triton-operator-leader-election"
ELECTION_ARGS = ["--leader-election", "--leader-election-lease-name=triton-operator"]
DOWNWARD_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Kinds outside Kubernetes' own API; their tests check them field by field.
FOREIGN_KINDS = {"ServiceMonitor"}
VARIANTS = {
    "defaults": {},
    "namespaced": {"watchNamespaces": "{serving,staging}"},
    "standbys": {"replicaCount": "3"},
    "no-election": {"leaderElection.enabled": "false"},
    "servicemonitor": {"metrics.serviceMonitor.enabled": "true"},
    "grafana-dashboard": {"metrics.grafanaDashboard.enabled": "true"},
    "scheduling": {
        "nodeSelector.kubernetes\\.io/os": "linux",
        "tolerations[0].key": "dedicated",
        "tolerations[0].operator": "Exists",
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets[0].name": "ghcr",
        "podLabels.team": "ml-platform",
        "podAnnotations.example\\.com/owner": "ml",
    },
}


def _render(values: dict[str, str] | None = None, *, include_crds: bool = False) -> list[dict[str, Any]]:
    return render_chart(*set_args(values or {}), include_crds=include_crds)


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _rules(obj: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = obj["rules"]
    return rules


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_fits_the_kubernetes_schema(variant: str) -> None:
    objects = _render(VARIANTS[variant], include_crds=True)
    for obj in objects:
        kind = obj["kind"]
        if kind in FOREIGN_KINDS:
            continue
        assert kind in MODEL_OF_KIND, f"{kind} has no schema check"
        check_against_model(obj, MODEL_OF_KIND[kind], f"{kind}/{obj['metadata']['name']}")
        deserialize(obj, MODEL_OF_KIND[kind])  # required fields present
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "triton-operator"
        if kind in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"]
        elif kind not in {"Role", "RoleBinding"}:
            assert obj["metadata"]["namespace"] == NAMESPACE
    assert {obj["kind"] for obj in objects} >= {"CustomResourceDefinition", "Deployment", "ClusterRole"}


def test_crds_ship_with_the_chart() -> None:
    names = {
        obj["metadata"]["name"]
        for obj in _render(include_crds=True)
        if obj["kind"] == "CustomResourceDefinition"
    }
    generated = {path.name.removesuffix(".yaml") for path in (ROOT / "crds").glob("*.yaml")}
    assert names == generated  # nothing else: the chart needs no CRD of kopf's (no peering)
    assert "tritonservers.tritonoperator.dev" in names


def test_deployment_meets_pod_security_restricted() -> None:
    pod = _one(_render(), "Deployment")["spec"]["template"]["spec"]
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 1000
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key, False)
    # restricted allows only these volume types; the emptyDir backs /tmp under the read-only root.
    allowed = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged", False)
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert not any("hostPort" in port for port in container["ports"])
    assert pod["automountServiceAccountToken"] is True


def test_upgrades_roll_with_election_and_recreate_without() -> None:
    spec = _one(_render(), "Deployment")["spec"]
    assert spec["replicas"] == 1
    # The new pod waits as a standby until the old one released the Lease: never two acting.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    alone = _one(_render(VARIANTS["no-election"]), "Deployment")["spec"]
    assert alone["strategy"] == {"type": "Recreate"}
    assert _one(_render(VARIANTS["standbys"]), "Deployment")["spec"]["replicas"] == 3


def test_liveness_and_readiness_are_wired_to_the_health_port() -> None:
    container = _container(_render())
    assert container["args"] == ["run", "--health-port=8080", *ELECTION_ARGS]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    # main.run_operator serves /metrics on the health port + 1.
    assert ports == {"health": 8080, "metrics": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]


def test_image_and_its_env_follow_app_version_and_overrides() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "triton-operator" / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The image tag the chart deploys is the version of the package inside it.
    assert chart["appVersion"] == project["version"] and IMAGE.endswith(f":{project['version']}")
    container = _container(_render())
    assert container["image"] == IMAGE
    assert {"name": "TRITON_OPERATOR_IMAGE", "value": IMAGE} in container["env"]
    custom = _container(_render({"image.repository": "registry.local/op", "image.tag": "dev"}))
    assert custom["image"] == "registry.local/op:dev"
    assert {"name": "TRITON_OPERATOR_IMAGE", "value": "registry.local/op:dev"} in custom["env"]


def test_metrics_service_targets_the_pod() -> None:
    objects = _render()
    service = _one(objects, "Service")
    pod_labels = _one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not any(obj["kind"] == "ServiceMonitor" for obj in objects)


def test_service_monitor_is_opt_in_with_configurable_labels() -> None:
    objects = _render(
        {"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.release": "prom"}
    )
    monitor = _one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    service = _one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "honorLabels": True,
            "interval": "30s",
            "scrapeTimeout": "10s",
        }
    ]


def test_cluster_role_is_exactly_what_the_operator_uses() -> None:
    objects = _render()
    role = _one(objects, "ClusterRole")
    assert _rules(role) == DISCOVERY_RULES + WORKLOAD_RULES
    binding = _one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = _one(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    deployment = _one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    # Cluster-wide, the only namespaced RBAC is the election's.
    assert {obj["metadata"]["name"] for obj in objects if obj["kind"] in {"Role", "RoleBinding"}} == {
        LEASE_ROLE
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_secrets_and_no_wildcards_in_any_role(variant: str) -> None:
    roles = [obj for obj in _render(VARIANTS[variant]) if obj["kind"] in {"ClusterRole", "Role"}]
    assert roles
    for role in roles:
        for rule in _rules(role):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert not any(resource.split("/")[0] == "secrets" for resource in rule["resources"])
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "nonResourceURLs" not in rule


def test_rbac_covers_every_shipped_crd_and_its_status() -> None:
    resources = {r for rule in _rules(_one(_render(), "ClusterRole")) for r in rule["resources"]}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        plural = crd["spec"]["names"]["plural"]
        assert {plural, f"{plural}/status"} <= resources, f"{path.name} is not covered by the ClusterRole"


def test_leader_election_role_allows_only_its_lease() -> None:
    objects = _render()
    role = _one([obj for obj in objects if obj["metadata"]["name"] == LEASE_ROLE], "Role")
    assert role["metadata"]["namespace"] == NAMESPACE  # where the pod runs, so where POD_NAMESPACE points
    assert _rules(role) == LEASE_RULES
    binding = _one([obj for obj in objects if obj["metadata"]["name"] == LEASE_ROLE], "RoleBinding")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEASE_ROLE}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "triton-operator", "namespace": NAMESPACE}
    ]
    # No other role touches Leases.
    for other in (obj for obj in objects if obj["kind"] in {"Role", "ClusterRole"} and obj is not role):
        assert all("coordination.k8s.io" not in rule["apiGroups"] for rule in _rules(other))


def test_leader_election_args_and_downward_env() -> None:
    container = _container(_render())
    assert container["args"][-2:] == ELECTION_ARGS
    env = container["env"]
    assert all(var in env for var in DOWNWARD_ENV)
    # A lease name of one's own reaches the flag and the Role's resourceNames alike.
    objects = _render({"leaderElection.leaseName": "ops-leader"})
    assert _container(objects)["args"][-1] == "--leader-election-lease-name=ops-leader"
    role = _one([obj for obj in objects if obj["metadata"]["name"] == LEASE_ROLE], "Role")
    assert _rules(role)[1]["resourceNames"] == ["ops-leader"]
    # The default is the release's full name.
    renamed = render_chart("--set", "fullnameOverride=triton")
    assert _container(renamed)["args"][-1] == "--leader-election-lease-name=triton"


def test_without_leader_election_no_lease_rbac_flags_or_env() -> None:
    objects = _render(VARIANTS["no-election"])
    container = _container(objects)
    assert container["args"] == ["run", "--health-port=8080"]
    assert [var["name"] for var in container["env"]] == ["TRITON_OPERATOR_IMAGE", *POD_MONITOR_ENV]
    assert not any(obj["kind"] in {"Role", "RoleBinding"} for obj in objects)


POD_MONITOR_ENV = (
    "TRITON_OPERATOR_POD_MONITOR",
    "TRITON_OPERATOR_POD_MONITOR_LABELS",
    "TRITON_OPERATOR_POD_MONITOR_INTERVAL",
)


def test_pod_monitor_setting_reaches_the_operator() -> None:
    """metrics.podMonitor becomes the environment render/podmonitor.py reads (off by default)."""

    def env(objects: list[dict[str, Any]]) -> dict[str, str]:
        return {
            var["name"]: var["value"] for var in _container(objects)["env"] if var["name"] in POD_MONITOR_ENV
        }

    assert env(_render()) == dict(zip(POD_MONITOR_ENV, ("false", "{}", "30s"), strict=True))
    on = _render(
        {
            "metrics.podMonitor.enabled": "true",
            "metrics.podMonitor.labels.release": "kps",
            "metrics.podMonitor.interval": "15s",
        }
    )
    assert env(on) == dict(zip(POD_MONITOR_ENV, ("true", '{"release":"kps"}', "15s"), strict=True))


def test_prometheus_address_reaches_the_operator_only_when_set() -> None:
    """autoscaling.prometheusAddress becomes the environment render/autoscaling.py reads."""

    def address(objects: list[dict[str, Any]]) -> list[str]:
        env = _container(objects)["env"]
        return [var["value"] for var in env if var["name"] == "TRITON_OPERATOR_PROMETHEUS_ADDRESS"]

    assert address(_render()) == []
    prom = "http://prometheus-operated.monitoring:9090"
    assert address(_render({"autoscaling.prometheusAddress": prom})) == [prom]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_kopf_peering_anywhere(variant: str) -> None:
    objects = _render(VARIANTS[variant], include_crds=True)
    assert not any(obj["apiVersion"].startswith("kopf.dev/") for obj in objects)
    assert not any("kopf.dev" in obj["metadata"]["name"] for obj in objects)
    for role in (obj for obj in objects if obj["kind"] in {"Role", "ClusterRole"}):
        assert all("kopf.dev" not in rule["apiGroups"] for rule in _rules(role))
    assert all(not var["name"].endswith("PEERING") for var in _container(objects)["env"])


def test_election_role_does_not_clash_with_a_watched_release_namespace() -> None:
    objects = _render({"watchNamespaces": f"{{{NAMESPACE},serving}}"})
    names = [
        (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        for obj in objects
        if obj["kind"] in {"Role", "RoleBinding"}
    ]
    assert len(names) == len(set(names)) == 6  # workload Role+Binding in both, the election's in one


def test_namespaced_mode_uses_a_role_per_namespace() -> None:
    objects = _render(VARIANTS["namespaced"])
    assert _container(objects)["args"] == [
        "run",
        "--health-port=8080",
        "--namespace=serving",
        "--namespace=staging",
        *ELECTION_ARGS,
    ]
    # Only kopf's cluster-scoped discovery stays cluster-wide.
    assert _rules(_one(objects, "ClusterRole")) == DISCOVERY_RULES
    workload = [obj for obj in objects if obj["metadata"]["name"] != LEASE_ROLE]
    roles = {obj["metadata"]["namespace"]: obj for obj in workload if obj["kind"] == "Role"}
    bindings = {obj["metadata"]["namespace"]: obj for obj in workload if obj["kind"] == "RoleBinding"}
    assert set(roles) == set(bindings) == {"serving", "staging"}
    for namespace, role in roles.items():
        assert _rules(role) == WORKLOAD_RULES
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "triton-operator", "namespace": NAMESPACE}
        ]


def test_bring_your_own_service_account_and_rbac() -> None:
    objects = _render(
        {"serviceAccount.create": "false", "serviceAccount.name": "ops", "rbac.create": "false"}
    )
    assert {obj["kind"] for obj in objects} == {"Deployment", "Service"}
    assert _one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_scheduling_values_reach_the_pod() -> None:
    pod_template = _one(_render(VARIANTS["scheduling"]), "Deployment")["spec"]["template"]
    pod = pod_template["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "ghcr"}]
    assert pod_template["metadata"]["labels"]["team"] == "ml-platform"
    assert pod_template["metadata"]["annotations"] == {"example.com/owner": "ml"}
