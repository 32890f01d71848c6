"""Layout PerReplica: a server's staged models reach each Triton pod as the pod's own verified copy.

Staging Jobs write each version once into the repository PVC, as in layout Shared. Only one pod mounts
that PVC, the repository server, so a ReadWriteOnce volume (the default class of most clusters: EBS,
PD, Azure Disk, local-path) works with Triton pods on any number of nodes. The staging Jobs run beside
it (required pod affinity: a ReadWriteOnce volume is attached to one node, where several pods may use
it). Each Triton pod has an emptyDir at /models and a sidecar that mirrors the server's content into it,
checking every file's sha256; the operator loads a model on a pod only once the pod's copy of that model
is exactly the server's (reconcile/pod_copies.py), so the readiness gate keeps a pod without a complete copy
out of the Service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triton_operator.api.common import LABEL_COMPONENT
from triton_operator.api.tritonserver import RepositoryLayout, TritonServerSpec
from triton_operator.render.labels import selector_labels, standard_labels

Manifest = dict[str, Any]

REPOSITORY_COMPONENT = "repository"
SERVER_CONTAINER = "repository"
SYNC_CONTAINER = "repository-sync"
SERVER_PORT = 8080
SYNC_PORT = 8090
SYNC_PORT_NAME = "repo-sync"
MOUNT_PATH = "/models"
# uid/gid the operator image's programs run as (the staging Jobs' too): they read and write one tree.
FILES_UID = 1000
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
STARTUP_BUDGET_S = 120
GPU_TAINT_KEY = "nvidia.com/gpu"


def per_replica(spec: TritonServerSpec) -> bool:
    """Whether each Triton pod holds its own copy (else every pod mounts the PVC)."""
    return spec.model_repository.resolved_layout() == RepositoryLayout.PER_REPLICA


def repository_server_name(server: str) -> str:
    """Name of the repository server's Deployment and Service."""
    return f"{server}-repository"


def repository_selector(server: str) -> dict[str, str]:
    """Labels selecting a server's repository-server pod (not its Triton pods: another component)."""
    return {**selector_labels(server), LABEL_COMPONENT: REPOSITORY_COMPONENT}


def source_url(server: str, namespace: str, cluster_ip: str | None) -> str:
    """Where the sync sidecars read: the Service's ClusterIP once known, else its DNS name.

    The operator renders with the ClusterIP it read back from applying the Service: it works on clusters
    without cluster DNS too, and a Service keeps its ClusterIP for life."""
    host = cluster_ip or f"{repository_server_name(server)}.{namespace}.svc"
    return f"http://{host}:{SERVER_PORT}"


def _metadata(name: str, namespace: str, owner_labels: Mapping[str, str]) -> Manifest:
    """The repository server's Deployment and Service: the server's child labels, as its component."""
    labels = {**owner_labels, LABEL_COMPONENT: REPOSITORY_COMPONENT}
    return {"name": repository_server_name(name), "namespace": namespace, "labels": labels}


def _restricted() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def _health_probe(port: str, *, period: int, failure_threshold: int = 3) -> Manifest:
    return {
        "httpGet": {"path": "/healthz", "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _startup_probe(port: str) -> Manifest:
    """Up to STARTUP_BUDGET_S to listen before liveness counts: on a node busy starting Triton pods a
    Python program may take tens of seconds to start, and liveness alone killed it over and over."""
    return _health_probe(port, period=2, failure_threshold=STARTUP_BUDGET_S // 2)


def sync_container(source: str, operator_image: str) -> Manifest:
    """The sidecar keeping a Triton pod's /models equal to the repository server's content."""
    return {
        "name": SYNC_CONTAINER,
        "image": operator_image,
        "args": ["repository", "sync", "--source", source, "--root", MOUNT_PATH, "--port", str(SYNC_PORT)],
        "ports": [{"name": SYNC_PORT_NAME, "containerPort": SYNC_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "startupProbe": _startup_probe(SYNC_PORT_NAME),
        "livenessProbe": _health_probe(SYNC_PORT_NAME, period=10),
        "volumeMounts": [{"name": "models", "mountPath": MOUNT_PATH}],
        "securityContext": _restricted(),
    }


def copy_volume(spec: TritonServerSpec) -> Manifest:
    """A Triton pod's own copy: node-local, as large as the repository may grow."""
    return {"name": "models", "emptyDir": {"sizeLimit": spec.model_repository.size}}


def staging_placement(server: str) -> Manifest:
    """Pod spec fields putting staging and removal Jobs on the repository server's node, where its
    volume is attached (tolerating what it tolerates)."""
    term = {"labelSelector": {"matchLabels": repository_selector(server)}, "topologyKey": HOSTNAME_TOPOLOGY}
    return {
        "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}},
        "tolerations": _tolerations(),
    }


def _tolerations() -> list[Manifest]:
    # The repository server may join the Triton pods on a GPU node (see _server_affinity); it asks
    # for no GPU.
    return [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]


def _server_affinity(server: str) -> Manifest:
    """Near the server's Triton pods when it can be: a pool moving from layout Shared still holds a
    ReadWriteOnce volume on its node, and a repository server elsewhere would wait for it to detach."""
    term = {"labelSelector": {"matchLabels": selector_labels(server)}, "topologyKey": HOSTNAME_TOPOLOGY}
    return {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def render_repository_deployment(
    name: str,
    namespace: str,
    claim: str,
    *,
    operator_image: str,
    owner_labels: Mapping[str, str],
) -> Manifest:
    """The repository server: one pod serving the PVC's files read-only to the sync sidecars."""
    labels = {**standard_labels(name), LABEL_COMPONENT: REPOSITORY_COMPONENT}
    container: Manifest = {
        "name": SERVER_CONTAINER,
        "image": operator_image,
        "args": ["repository", "serve", "--root", MOUNT_PATH, "--port", str(SERVER_PORT)],
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "startupProbe": _startup_probe("http"),
        "readinessProbe": _health_probe("http", period=5),
        "livenessProbe": _health_probe("http", period=10),
        "volumeMounts": [{"name": "models", "mountPath": MOUNT_PATH, "readOnly": True}],
        "securityContext": _restricted(),
    }
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": FILES_UID,
            "runAsGroup": FILES_UID,
            "fsGroup": FILES_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": _server_affinity(name),
        "tolerations": _tolerations(),
        "containers": [container],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, owner_labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": repository_selector(name)},
            # A ReadWriteOnce volume cannot attach to a second node while the old pod holds it.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def render_repository_service(name: str, namespace: str, *, owner_labels: Mapping[str, str]) -> Manifest:
    """The repository server's ClusterIP Service."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, owner_labels),
        "spec": {
            "type": "ClusterIP",
            "selector": repository_selector(name),
            "ports": [
                {
                    "name": "http",
                    "port": SERVER_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
