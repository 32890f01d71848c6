"""Children of a TritonServer: Deployment, Service, model-repository PVC, PodDisruptionBudget and, in
layout PerReplica, the repository server (render/repository.py)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.render.labels import (
    GPU_PRODUCT_LABEL,
    MODELS_LOADED_GATE,
    SPEC_HASH_ANNOTATION,
    selector_labels,
    standard_labels,
    volume_labels,
)
from triton_operator.render.labels import owner_labels as labels_for_owner
from triton_operator.render.repository import (
    copy_volume,
    per_replica,
    render_repository_deployment,
    render_repository_service,
    source_url,
    sync_container,
)

CONTAINER_NAME = "tritonserver"
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_REPOSITORY_PATH = "/models"
SHM_PATH = "/dev/shm"
GPU_RESOURCE = "nvidia.com/gpu"
# uid/gid of the triton-server user in NVIDIA's Triton images.
TRITON_UID = 1000
STARTUP_PERIOD_SECONDS = 10
# Seconds Kubernetes waits past Triton's own exit timeout before SIGKILL.
GRACE_MARGIN_SECONDS = 15
# Seconds a deleted pod keeps accepting new connections before Triton gets SIGTERM: on SIGTERM Triton
# refuses every new connection (it serves only those open), while kube-proxy and a Gateway take a
# moment to drop the pod's endpoint; requests they still send it would fail (measured on real Triton:
# tests/integration/test_triton_shutdown.py).
PRESTOP_SLEEP_SECONDS = 5
# A gRPC client's connection outlives its pod's endpoint: kube-proxy balances connections, not
# requests. On SIGTERM Triton unloads every model while its gRPC endpoint still answers, so requests on
# an open connection fail ("Server is stopping", then NOT_FOUND "has no available versions") until it
# exits: 1,026 of 1,512 after SIGTERM with 4 clients on real Triton 2.51. Triton ends each connection
# after this age (gRPC GOAWAY, +-10% jitter; clients reconnect without failing a request), so during
# the preStop sleep every connection moves to a pod still in the Service: 0 of 2,700 failed.
GRPC_MAX_CONNECTION_AGE_MS = (PRESTOP_SLEEP_SECONDS - 1) * 1000
# A rollout counts as stuck only after a full startup budget plus this margin.
PROGRESS_MARGIN_SECONDS = 300

Manifest = dict[str, Any]


def _flag(value: bool) -> str:
    """tritonserver's boolean flag spelling."""
    return "true" if value else "false"


def metrics_enabled(spec: TritonServerSpec) -> bool:
    """Whether Triton serves /metrics on port 8002."""
    return spec.triton.metrics.enabled


# Headers (HTTP) and metadata (gRPC) Triton hands to models as request parameters: `x-` ones only, so
# that credentials (authorization, cookies) never reach model code.
FORWARDED_HEADERS = "^x-.*"


def triton_args(spec: TritonServerSpec) -> list[str]:
    """tritonserver's command-line arguments: the flags the operator owns, then spec.triton.extraArgs."""
    triton = spec.triton
    metrics = triton.metrics
    args = [
        f"--model-repository={MODEL_REPOSITORY_PATH}",
        f"--model-control-mode={triton.model_control_mode.value}",
        f"--strict-readiness={_flag(triton.strict_readiness)}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--allow-metrics={_flag(metrics.enabled)}",
        # GPU metrics need a GPU; without one Triton only logs a warning, so keep the flag honest.
        f"--allow-gpu-metrics={_flag(metrics.enabled and metrics.gpu_metrics)}",
    ]
    if metrics.enabled and metrics.summary_latencies:
        args.append("--metrics-config=summary_latencies=true")
    if metrics.enabled and metrics.interval_ms is not None:
        args.append(f"--metrics-interval-ms={metrics.interval_ms}")
    if triton.log_verbose:
        args.append(f"--log-verbose={triton.log_verbose}")
    args.append(f"--exit-timeout-secs={triton.exit_timeout_seconds}")
    args.append(f"--grpc-max-connection-age={GRPC_MAX_CONNECTION_AGE_MS}")
    # The routers of canaries and experiments read a sticky key and the pinning header from the
    # request's parameters; Triton passes headers there only when they match these patterns.
    args.append(f"--http-header-forward-pattern={FORWARDED_HEADERS}")
    args.append(f"--grpc-header-forward-pattern={FORWARDED_HEADERS}")
    return args + list(triton.extra_args)


def deployment_name(name: str) -> str:
    """Name of the Deployment (the Service and PDB share it)."""
    return name


def pvc_name(name: str, spec: TritonServerSpec) -> str:
    """Name of the model-repository PVC: the existing claim, or the one the operator creates."""
    return spec.model_repository.existing_claim or f"{name}-models"


def service_endpoints(name: str, namespace: str, spec: TritonServerSpec) -> dict[str, str]:
    """status.endpoints: in-cluster addresses of the Service."""
    host = f"{name}.{namespace}.svc"
    endpoints = {"http": f"{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}
    if metrics_enabled(spec):
        endpoints["metrics"] = f"http://{host}:{METRICS_PORT}/metrics"
    return endpoints


def _resources(spec: TritonServerSpec) -> Manifest:
    """Container resources; GPUs in limits and, equal, in requests (extended resources cannot overcommit)."""
    wanted = spec.resources
    requests = wanted.requests.model_dump(exclude_none=True) if wanted.requests else {}
    limits = wanted.limits.model_dump(exclude_none=True) if wanted.limits else {}
    limits[GPU_RESOURCE] = requests[GPU_RESOURCE] = str(wanted.gpus)
    resources: Manifest = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return resources


def _env(spec: TritonServerSpec) -> list[Manifest]:
    """Container env: the user's."""
    return [item.model_dump(mode="json", exclude_none=True) for item in spec.env]


def _ports(spec: TritonServerSpec) -> list[Manifest]:
    """Named container ports."""
    ports = [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
    ]
    if metrics_enabled(spec):
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    return ports


def _probe(path: str, *, period: int, failure_threshold: int) -> Manifest:
    """An HTTP probe on Triton's health API."""
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _container(spec: TritonServerSpec) -> Manifest:
    """The tritonserver container."""
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": ["tritonserver"],
        "args": triton_args(spec),
        "ports": _ports(spec),
        # A Triton that exits at startup says why in its last log lines; this puts them in the pod's
        # status (lastState.terminated.message), where the operator reads them for its conditions.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
    }
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy.value
    env = _env(spec)
    if env:
        container["env"] = env
    if spec.env_from:
        container["envFrom"] = [item.model_dump(mode="json", exclude_none=True) for item in spec.env_from]
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    # Liveness and startup use /live: a model that fails to load must not restart the pod (it would fail
    # again); readiness uses /ready so a pod takes traffic only once Triton (and, when strict, every
    # model) is ready.
    budget = spec.startup.budget_seconds
    container["startupProbe"] = _probe(
        "/v2/health/live",
        period=STARTUP_PERIOD_SECONDS,
        failure_threshold=math.ceil(budget / STARTUP_PERIOD_SECONDS),
    )
    container["livenessProbe"] = _probe("/v2/health/live", period=10, failure_threshold=3)
    container["readinessProbe"] = _probe("/v2/health/ready", period=5, failure_threshold=3)
    container["volumeMounts"] = [
        # Read-only: the operator's Job stages models and Triton's API loads them; nothing writes here.
        {"name": "models", "mountPath": MODEL_REPOSITORY_PATH, "readOnly": True},
        {"name": "dshm", "mountPath": SHM_PATH},
    ]
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        # Not read-only: the python backend and model code unpack stubs and caches under /tmp and $HOME.
        "readOnlyRootFilesystem": False,
    }
    return container


def _node_selector(spec: TritonServerSpec) -> dict[str, str]:
    """The user's nodeSelector plus the GPU product label when gpuProduct is set."""
    selector = dict(spec.node_selector)
    if spec.gpu_product:
        selector[GPU_PRODUCT_LABEL] = spec.gpu_product
    return selector


@dataclass(frozen=True)
class Copies:
    """Layout PerReplica: where each pod's sync sidecar reads, and the image it runs."""

    source: str
    operator_image: str


def copies_for(
    name: str, namespace: str, spec: TritonServerSpec, *, operator_image: str, cluster_ip: str | None
) -> Copies | None:
    """What the Triton pods of `spec` need for their own copies; None in layout Shared."""
    if not per_replica(spec):
        return None
    return Copies(source_url(name, namespace, cluster_ip), operator_image)


def _pod_spec(name: str, spec: TritonServerSpec, models_gate: bool, copies: Copies | None) -> Manifest:
    """Pod spec of the Triton pods."""
    pod: Manifest = {}
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [ref.model_dump(mode="json") for ref in spec.image_pull_secrets]
    node_selector = _node_selector(spec)
    if node_selector:
        pod["nodeSelector"] = node_selector
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(mode="json", exclude_none=True) for t in spec.tolerations]
    if spec.affinity:
        pod["affinity"] = spec.affinity
    pod["terminationGracePeriodSeconds"] = (
        PRESTOP_SLEEP_SECONDS + spec.triton.exit_timeout_seconds + GRACE_MARGIN_SECONDS
    )
    # Ready (behind the Service) only once the operator loaded the server's models into this Triton:
    # Triton's own readiness comes before any model is there (see reconcile/gates.py).
    if models_gate:
        pod["readinessGates"] = [{"conditionType": MODELS_LOADED_GATE}]
    # Triton needs no Service env vars; thousands of them in a busy namespace only slow pod start.
    pod["enableServiceLinks"] = False
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": TRITON_UID,
        "runAsGroup": TRITON_UID,
        "fsGroup": TRITON_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["containers"] = [_container(spec)]
    models: Manifest = {"name": "models", "persistentVolumeClaim": {"claimName": pvc_name(name, spec)}}
    if copies is not None:
        pod["containers"].append(sync_container(copies.source, copies.operator_image))
        models = copy_volume(spec)
    pod["volumes"] = [
        models,
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shared_memory_size}},
    ]
    return pod


def spec_hash(template: Mapping[str, Any]) -> str:
    """Short, stable hash of a pod template; equal hashes mean applying would not restart pods."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _strategy(spec: TritonServerSpec) -> Manifest:
    """Rolling update that never needs more GPUs than the pool already holds."""
    # GPUs are scarce: a surge pod needs a free GPU, and on a full pool it stays Pending forever while
    # the old pod waits for it to become ready, deadlocking the rollout. Replace one pod at a time.
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def render_deployment(
    name: str,
    namespace: str,
    spec: TritonServerSpec,
    *,
    owner_labels: Mapping[str, str],
    models_gate: bool = True,
    copies: Copies | None = None,
) -> Manifest:
    """The Deployment of Triton pods (`models_gate`: with the models-loaded readiness gate; `copies`:
    each pod holds its own copy of the repository, layout PerReplica)."""
    template_metadata: Manifest = {"labels": {**spec.pod_labels, **standard_labels(name)}}
    if spec.pod_annotations:
        template_metadata["annotations"] = dict(spec.pod_annotations)
    template: Manifest = {"metadata": template_metadata, "spec": _pod_spec(name, spec, models_gate, copies)}
    # The hash covers exactly the pod template, so it changes iff applying the Deployment would roll the pods.
    template_metadata.setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = spec_hash(template)
    deployment_spec: Manifest = {
        "replicas": spec.replica_count(),
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": _strategy(spec),
        "progressDeadlineSeconds": spec.startup.budget_seconds + PROGRESS_MARGIN_SECONDS,
        "revisionHistoryLimit": 3,
        "template": template,
    }
    if deployment_spec["replicas"] is None:
        # Under spec.autoscaling the HPA owns the count: an apply that leaves the field out (server-side
        # apply) never sets it back, and drops the operator's claim on it (see reconcile/autoscaling.py).
        del deployment_spec["replicas"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace, "labels": dict(owner_labels)},
        "spec": deployment_spec,
    }


def render_service(
    name: str, namespace: str, spec: TritonServerSpec, *, owner_labels: Mapping[str, str]
) -> Manifest:
    """The Service in front of the pods, one named port per Triton endpoint."""
    ports = [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        # Cleartext HTTP/2: the standard appProtocol Gateway API implementations and meshes read for gRPC.
        {
            "name": "grpc",
            "port": GRPC_PORT,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
    if metrics_enabled(spec):
        ports.append(
            {
                "name": "metrics",
                "port": METRICS_PORT,
                "targetPort": "metrics",
                "protocol": "TCP",
                "appProtocol": "http",
            }
        )
    metadata: Manifest = {"name": name, "namespace": namespace, "labels": dict(owner_labels)}
    if spec.service.annotations:
        metadata["annotations"] = dict(spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"type": spec.service.type.value, "selector": selector_labels(name), "ports": ports},
    }


def render_pvc(
    name: str, namespace: str, spec: TritonServerSpec, *, owner_labels: Mapping[str, str]
) -> Manifest | None:
    """The model-repository PVC, or None when spec.modelRepository.existingClaim names one to use."""
    repository = spec.model_repository
    if repository.existing_claim:
        return None
    pvc_spec: Manifest = {
        "accessModes": [mode.value for mode in repository.access_modes],
        "resources": {"requests": {"storage": repository.size}},
    }
    if repository.storage_class_name is not None:
        pvc_spec["storageClassName"] = repository.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": pvc_name(name, spec), "namespace": namespace, "labels": dict(owner_labels)},
        "spec": pvc_spec,
    }


def render_pdb(
    name: str, namespace: str, spec: TritonServerSpec, *, owner_labels: Mapping[str, str]
) -> Manifest | None:
    """A PodDisruptionBudget letting node drains take one pod at a time; None for a single replica."""
    if spec.most_replicas() <= 1:
        # With one replica maxUnavailable 1 protects nothing, and minAvailable 1 would block every drain.
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(owner_labels)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(name)},
            # A pod that is not ready serves nothing; do not let it block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def template_hash(deployment: Mapping[str, Any] | None) -> str | None:
    """The spec hash a Deployment's pod template carries (None: no Deployment or no hash)."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    return str(value) if value else None


def spec_has_models_gate(pod_spec: Mapping[str, Any]) -> bool:
    """Whether a pod spec (a pod's, or a template's) has the models-loaded readiness gate."""
    return any(g.get("conditionType") == MODELS_LOADED_GATE for g in pod_spec.get("readinessGates") or [])


def template_has_models_gate(deployment: Mapping[str, Any]) -> bool:
    """Whether a Deployment's pod template has the models-loaded readiness gate."""
    return spec_has_models_gate(((deployment.get("spec") or {}).get("template") or {}).get("spec") or {})


def wants_models_gate(
    name: str, spec: TritonServerSpec, running: Mapping[str, Any] | None, copies: Copies | None = None
) -> bool:
    """Whether to render the readiness gate: always, except for pods an older operator started without
    it that run this very spec. Adding it changes the pod template and so rolls every Triton pod; an
    operator upgrade must not restart them, so they get it with their server's next real change."""
    if running is None or template_has_models_gate(running):
        return True
    gateless = render_deployment(name, "", spec, owner_labels={}, models_gate=False, copies=copies)
    return template_hash(running) != template_hash(gateless)


def render_all(
    name: str,
    namespace: str,
    uid: str,
    spec: TritonServerSpec,
    *,
    models_gate: bool = True,
    copies: Copies | None = None,
) -> list[Manifest]:
    """Every child of a TritonServer in apply order: PVC, the repository server (layout PerReplica, with
    `copies`), Deployment, Service, PDB (absent ones skipped)."""
    labels = labels_for_owner(name, uid)
    children = [render_pvc(name, namespace, spec, owner_labels=volume_labels(name, uid))]
    if copies is not None:
        children += [
            render_repository_deployment(
                name,
                namespace,
                pvc_name(name, spec),
                operator_image=copies.operator_image,
                owner_labels=labels,
            ),
            render_repository_service(name, namespace, owner_labels=labels),
        ]
    children += [
        render_deployment(name, namespace, spec, owner_labels=labels, models_gate=models_gate, copies=copies),
        render_service(name, namespace, spec, owner_labels=labels),
        render_pdb(name, namespace, spec, owner_labels=labels),
    ]
    return [child for child in children if child is not None]
