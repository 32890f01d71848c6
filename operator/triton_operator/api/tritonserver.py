"""TritonServer: a pool of Triton pods serving one model repository (spec and status models)."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from kubernetes.utils import parse_quantity
from pydantic import ConfigDict, Field, field_validator, model_validator

from triton_operator.api.autoscaling import Autoscaling
from triton_operator.api.common import (
    OPERATOR_LABEL_KEYS,
    ApiModel,
    Condition,
    ImagePullPolicy,
    LabelValue,
    LocalObjectReference,
    MetadataKey,
    ObjectName,
    Quantity,
    StatusModel,
    cel,
    cel_string_list,
    preserve_unknown,
)
from triton_operator.api.gateway import GatewayExposure
from triton_operator.api.kinds import KindInfo, PrinterColumn, ScaleSubresource, register_kind
from triton_operator.api.monitoring import Monitoring

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
MAX_REPLICAS = 64
MAX_GPUS = 16

# Flags rendered from the spec; in extraArgs they would fight the operator (Triton takes the last one).
# --model-store is Triton's alias of --model-repository.
OPERATOR_OWNED_FLAGS = (
    "--model-repository",
    "--model-store",
    "--model-control-mode",
    "--strict-readiness",
    "--http-port",
    "--grpc-port",
    "--metrics-port",
    "--allow-metrics",
    "--allow-gpu-metrics",
    "--metrics-interval-ms",
    "--log-verbose",
    "--exit-timeout-secs",
    "--http-header-forward-pattern",
    "--grpc-header-forward-pattern",
    "--allow-grpc",
    "--grpc-address",
)


REPLICAS_WITH_AUTOSCALING = (
    "spec.replicas and spec.autoscaling cannot both be set: remove spec.replicas: the autoscaler owns the "
    "replica count"
)


def _owned_flag(arg: str) -> str | None:
    """The operator-owned flag an argument sets, if any."""
    for flag in OPERATOR_OWNED_FLAGS:
        if arg == flag or arg.startswith(flag + "="):
            return flag
    return None


class ModelControlMode(enum.StrEnum):
    """How Triton picks the models it serves."""

    EXPLICIT = "explicit"
    POLL = "poll"
    NONE = "none"


class ServiceType(enum.StrEnum):
    """Type of the Service in front of the pods."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class RepositoryLayout(enum.StrEnum):
    """How the staged models reach each Triton pod."""

    # Every pod mounts the repository PVC: needs a volume many nodes can mount at once.
    SHARED = "Shared"
    # One pod (the repository server) mounts the PVC; each Triton pod holds its own verified copy.
    PER_REPLICA = "PerReplica"


class AccessMode(enum.StrEnum):
    """PersistentVolumeClaim access mode."""

    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_ONLY_MANY = "ReadOnlyMany"
    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class TolerationOperator(enum.StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(enum.StrEnum):
    """Taint effect a toleration matches; empty matches all."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class ResourceList(ApiModel):
    """CPU and memory amounts."""

    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 500m or 4.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 512Mi or 32Gi.")


def _quantity(text: str) -> Any:
    """A quantity as a Decimal, via the kubernetes client's parser."""
    return parse_quantity(text)  # type: ignore[no-untyped-call]


def _not_above(request: str | None, limit: str | None) -> bool:
    """Whether a request is at most its limit (true when either is unset)."""
    return request is None or limit is None or bool(_quantity(request) <= _quantity(limit))


_REQUEST_RULE = (
    "!has(self.requests) || !has(self.limits) || !has(self.requests.{r}) || !has(self.limits.{r}) "
    "|| quantity(self.requests.{r}).compareTo(quantity(self.limits.{r})) <= 0"
)


class Resources(ApiModel):
    """GPUs, CPU and memory of each Triton pod."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _REQUEST_RULE.format(r=r),
                    f"resources.requests.{r} must not exceed resources.limits.{r}",
                    field_path=f".requests.{r}",
                    reason="FieldValueInvalid",
                )
                for r in ("cpu", "memory")
            ]
        }
    )

    gpus: int = Field(
        default=1,
        ge=1,
        le=MAX_GPUS,
        description="GPUs per pod (1 to 16), requested and limited as nvidia.com/gpu.",
    )
    requests: ResourceList | None = Field(default=None, description="CPU and memory the scheduler reserves.")
    limits: ResourceList | None = Field(default=None, description="CPU and memory the pod may use at most.")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        """Mirror the CEL rule so a model_validate error names the field too."""
        requests, limits = self.requests or ResourceList(), self.limits or ResourceList()
        for resource in ("cpu", "memory"):
            if not _not_above(getattr(requests, resource), getattr(limits, resource)):
                raise ValueError(f"resources.requests.{resource} must not exceed resources.limits.{resource}")
        return self


class Toleration(ApiModel):
    """Lets pods schedule onto nodes with a matching taint (e.g. GPU nodes)."""

    key: Annotated[str, Field(max_length=317)] | None = Field(
        default=None, description="Taint key to match; empty with operator Exists matches every taint."
    )
    operator: TolerationOperator | None = Field(
        default=None, description="Exists or Equal (the default when unset)."
    )
    value: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="Taint value to match with operator Equal."
    )
    effect: TaintEffect | None = Field(default=None, description="Taint effect to match; empty matches all.")
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=31536000, description="How long a NoExecute taint is tolerated, in seconds."
    )


SHARED_NEEDS_RWX = (
    "modelRepository.layout Shared mounts the PVC on every Triton pod's node: set accessModes to "
    "[ReadWriteMany] (or use an existingClaim that is), or use layout PerReplica"
)


class ModelRepository(ApiModel):
    """The PersistentVolumeClaim holding the staged model repository; Triton reads it at /models, through
    its own copy (layout PerReplica) or the PVC itself (layout Shared)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.storageClassName) == has(oldSelf.storageClassName) && "
                    "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
                    "modelRepository.storageClassName is immutable (a PVC's storage class cannot change); "
                    "create a new TritonServer to move the repository",
                    field_path=".storageClassName",
                    reason="FieldValueInvalid",
                ),
                cel(
                    # has(): the apiserver also checks this rule against the schema's default `{}`,
                    # before nested defaults fill accessModes in.
                    "!has(self.accessModes) || !has(oldSelf.accessModes) || "
                    "self.accessModes == oldSelf.accessModes",
                    "modelRepository.accessModes is immutable (a PVC's access modes cannot change); "
                    "create a new TritonServer to change them",
                    field_path=".accessModes",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "has(self.existingClaim) == has(oldSelf.existingClaim) && "
                    "(!has(self.existingClaim) || self.existingClaim == oldSelf.existingClaim)",
                    "modelRepository.existingClaim is immutable: switching claims orphans staged models; "
                    "create a new TritonServer instead",
                    field_path=".existingClaim",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "!has(self.size) || !has(oldSelf.size) || "
                    "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
                    "modelRepository.size cannot shrink: Kubernetes can expand a PVC but never shrink it",
                    field_path=".size",
                    reason="FieldValueInvalid",
                ),
                cel(
                    f"!has(self.layout) || self.layout != '{RepositoryLayout.SHARED.value}' || "
                    "has(self.existingClaim) || "
                    "(has(self.accessModes) && 'ReadWriteMany' in self.accessModes)",
                    SHARED_NEEDS_RWX,
                    field_path=".layout",
                    reason="FieldValueInvalid",
                ),
            ]
        }
    )

    size: Quantity = Field(
        default="10Gi",
        description="Requested capacity of the PVC, e.g. 10Gi; it may grow (if the storage class allows "
        "expansion) but not shrink. Ignored with existingClaim.",
    )
    storage_class_name: (
        Annotated[str, Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")] | None
    ) = Field(default=None, description="StorageClass of the PVC; unset uses the cluster's default class.")
    access_modes: list[AccessMode] = Field(
        default=[AccessMode.READ_WRITE_ONCE],
        min_length=1,
        max_length=4,
        description="Access modes of the PVC. ReadWriteOnce works with replicas on many nodes (layout "
        "PerReplica: only the repository server mounts it); ReadWriteMany also allows layout Shared.",
    )
    existing_claim: ObjectName | None = Field(
        default=None,
        description="Name of an existing PVC in this namespace to use instead of creating one; "
        "the operator never deletes it.",
    )
    retain_on_delete: bool = Field(
        default=True,
        description="Keep the PVC (and the staged models) when the TritonServer is deleted.",
    )
    layout: RepositoryLayout | None = Field(
        default=None,
        description="How staged models reach each Triton pod. PerReplica: one small repository-server "
        "pod mounts the PVC and every Triton pod keeps its own copy (an emptyDir filled and verified by a "
        "sync sidecar), so any storage class works with replicas on many nodes. Shared: every Triton pod "
        "mounts the PVC (needs ReadWriteMany). Unset: Shared with accessModes ReadWriteMany, else "
        "PerReplica.",
    )

    @model_validator(mode="after")
    def _shared_needs_many_nodes(self) -> ModelRepository:
        """Mirror the CEL rule so a model_validate error names the field too."""
        many_nodes = bool(self.existing_claim) or AccessMode.READ_WRITE_MANY in self.access_modes
        if self.layout == RepositoryLayout.SHARED and not many_nodes:
            raise ValueError(SHARED_NEEDS_RWX)
        return self

    def resolved_layout(self) -> RepositoryLayout:
        """The layout in effect: the one set, else Shared only where the volume mounts on many nodes."""
        if self.layout is not None:
            return self.layout
        if not self.existing_claim and AccessMode.READ_WRITE_MANY in self.access_modes:
            return RepositoryLayout.SHARED
        return RepositoryLayout.PER_REPLICA


class TritonMetrics(ApiModel):
    """Triton's Prometheus metrics endpoint (port 8002, named metrics)."""

    enabled: bool = Field(default=True, description="Serve Prometheus metrics on port 8002.")
    summary_latencies: bool = Field(
        default=True,
        description="Export request and queue latency summaries (quantiles); the operator reads p50/p99 "
        "from them.",
    )
    gpu_metrics: bool = Field(default=True, description="Export GPU utilization and memory metrics.")
    interval_ms: int | None = Field(
        default=None,
        ge=100,
        le=60000,
        description="How often Triton refreshes GPU metrics, in milliseconds (Triton's default: 2000).",
    )


_FLAG_RULE = (
    f"self.all(arg, !{cel_string_list(OPERATOR_OWNED_FLAGS)}.exists(f, arg == f || arg.startsWith(f + '=')))"
)


class TritonSettings(ApiModel):
    """Settings passed to tritonserver as command-line flags."""

    model_control_mode: ModelControlMode = Field(
        default=ModelControlMode.EXPLICIT,
        description="explicit: the operator loads each TritonModel through Triton's repository API (required "
        "for TritonModel); poll: Triton rescans /models; none: load everything once at startup.",
    )
    strict_readiness: bool = Field(
        default=False,
        description="Report the pod ready only when every model is ready (/v2/health/ready). Off by default: "
        "with it, one model that fails to load, or any model while it loads, takes the whole pod out of "
        "the Service; the operator reports each model's state in its TritonModel instead.",
    )
    metrics: TritonMetrics = Field(
        default_factory=TritonMetrics,
        description="Prometheus metrics settings.",
        json_schema_extra={"default": {}},
    )
    log_verbose: int = Field(default=0, ge=0, le=3, description="Verbose logging level, 0 (off) to 3.")
    exit_timeout_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="Seconds Triton waits for in-flight requests on shutdown; the pod's grace period "
        "adds 15s.",
    )
    extra_args: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default=[],
        max_length=64,
        description="Additional tritonserver flags, e.g. --pinned-memory-pool-byte-size=268435456. Flags the "
        "operator sets from the spec are rejected: " + ", ".join(OPERATOR_OWNED_FLAGS) + ".",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _FLAG_RULE,
                    "triton.extraArgs must not set flags the operator owns ("
                    + ", ".join(OPERATOR_OWNED_FLAGS)
                    + "); use the matching spec field instead",
                    reason="FieldValueForbidden",
                )
            ]
        },
    )

    @field_validator("extra_args")
    @classmethod
    def _no_owned_flags(cls, args: list[str]) -> list[str]:
        """Mirror the CEL rule on extraArgs."""
        for arg in args:
            flag = _owned_flag(arg)
            if flag is not None:
                raise ValueError(
                    f"{arg!r} sets {flag}, which the operator owns; use the matching spec field instead"
                )
        return args


class EnvVar(ApiModel):
    """An environment variable of the Triton container (the shape of a core/v1 EnvVar)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.value) && has(self.valueFrom))",
                    "set either value or valueFrom, not both",
                    field_path=".valueFrom",
                    reason="FieldValueForbidden",
                )
            ]
        }
    )

    name: str = Field(
        min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name."
    )
    value: Annotated[str, Field(max_length=32768)] | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        **preserve_unknown(
            "Source of the value, as in a core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, ...)."
        ),
    )

    @model_validator(mode="after")
    def _value_or_value_from(self) -> EnvVar:
        """Mirror the CEL rule: value and valueFrom exclude each other."""
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set either value or valueFrom, not both")
        return self


class EnvFromRef(ApiModel):
    """A Secret or ConfigMap to import as environment variables."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap.")
    optional: bool | None = Field(
        default=None, description="Start the pod even if the object does not exist."
    )


class EnvFromSource(ApiModel):
    """Imports every key of a Secret or ConfigMap as environment variables."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.secretRef) != has(self.configMapRef)",
                    "set exactly one of secretRef or configMapRef",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    prefix: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="Prefix added to each variable name."
    )
    secret_ref: EnvFromRef | None = Field(default=None, description="The Secret to import.")
    config_map_ref: EnvFromRef | None = Field(default=None, description="The ConfigMap to import.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        """Mirror the CEL rule: exactly one source."""
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("set exactly one of secretRef or configMapRef")
        return self


class Startup(ApiModel):
    """How long a pod may take to start before Kubernetes restarts it."""

    budget_seconds: int = Field(
        default=600,
        ge=30,
        le=86400,
        description="Seconds Triton may take to become live (big models load slowly); the startup probe's "
        "failureThreshold x periodSeconds covers at least this.",
    )


class ServiceSettings(ApiModel):
    """The Service in front of the Triton pods."""

    type: ServiceType = Field(
        default=ServiceType.CLUSTER_IP, description="ClusterIP, NodePort or LoadBalancer."
    )
    annotations: dict[MetadataKey, Annotated[str, Field(max_length=4096)]] = Field(
        default={}, max_length=64, description="Annotations of the Service (e.g. for a cloud load balancer)."
    )


class TritonServerSpec(ApiModel):
    """Desired state of a TritonServer: a Deployment of Triton pods, its Service and model repository PVC."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.podLabels) || "
                    f"!{cel_string_list(OPERATOR_LABEL_KEYS)}.exists(k, k in self.podLabels)",
                    "podLabels must not set the labels the operator uses to select pods: "
                    + ", ".join(OPERATOR_LABEL_KEYS),
                    field_path=".podLabels",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "!(has(self.replicas) && has(self.autoscaling))",
                    REPLICAS_WITH_AUTOSCALING,
                    field_path=".replicas",
                    reason="FieldValueForbidden",
                ),
            ]
        }
    )

    image: str = Field(
        default=DEFAULT_IMAGE,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Triton container image.",
    )
    image_pull_policy: ImagePullPolicy | None = Field(
        default=None, description="Always, IfNotPresent or Never; unset lets Kubernetes choose from the tag."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default=[], max_length=16, description="Secrets with registry credentials, e.g. for nvcr.io."
    )
    # No schema default: a defaulted replicas would be set on every object, and the rule refusing it
    # beside spec.autoscaling would refuse them all. Unset is 1 (replica_count).
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description="Number of Triton pods (unset: 1); kubectl scale, HPA and KEDA change it through the "
        "scale subresource (an HPA of your own reads the scale, which needs it set). Leave it out with "
        "spec.autoscaling: the autoscaler owns the count.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale the pool on Triton's load: the operator makes a KEDA ScaledObject "
        "(keda.sh/v1alpha1) whose HPA scales the pool's Deployment, never this object, so what Git holds "
        "never changes. Excludes spec.replicas. Unset: spec.replicas (the ScaledObject is removed).",
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="GPUs, CPU and memory of each pod.",
        json_schema_extra={"default": {}},
    )
    gpu_product: LabelValue | None = Field(
        default=None,
        description="GPU model to run on, matched against the node label nvidia.com/gpu.product "
        "(e.g. NVIDIA-A100-SXM4-80GB).",
    )
    node_selector: dict[MetadataKey, LabelValue] = Field(
        default={}, max_length=32, description="Node labels the pods must match."
    )
    tolerations: list[Toleration] = Field(
        default=[], max_length=32, description="Tolerations of the pods, e.g. for tainted GPU nodes."
    )
    affinity: dict[str, Any] | None = Field(
        default=None, **preserve_unknown("Pod affinity rules, as in a core/v1 Affinity.")
    )
    model_repository: ModelRepository = Field(
        default_factory=ModelRepository,
        description="The PVC that holds the model repository.",
        json_schema_extra={"default": {}},
    )
    triton: TritonSettings = Field(
        default_factory=TritonSettings,
        description="tritonserver settings.",
        json_schema_extra={"default": {}},
    )
    env: list[EnvVar] = Field(default=[], max_length=128, description="Environment variables of Triton.")
    env_from: list[EnvFromSource] = Field(
        default=[], max_length=32, description="Secrets and ConfigMaps imported as environment variables."
    )
    shared_memory_size: Quantity = Field(
        default="1Gi",
        description="Size of /dev/shm (an in-memory emptyDir); the python backend and shared-memory "
        "clients need more than the container runtime's 64Mi.",
    )
    startup: Startup = Field(
        default_factory=Startup, description="Startup budget.", json_schema_extra={"default": {}}
    )
    service: ServiceSettings = Field(
        default_factory=ServiceSettings, description="The Service.", json_schema_extra={"default": {}}
    )
    gateway: GatewayExposure | None = Field(
        default=None,
        description="Expose the pool through a Gateway API Gateway: the operator owns an HTTPRoute (Triton's "
        "HTTP API) and a GRPCRoute (inference.GRPCInferenceService) named like the server, and reports the "
        "gateway's verdict in the Routed condition. Unset: no routes (they are removed).",
    )
    monitoring: Monitoring | None = Field(
        default=None,
        description="Prometheus scraping of the pods: a PodMonitor per server, on by the operator's "
        "setting or here (the kind must be served: the Prometheus Operator's CRDs).",
    )
    pod_labels: dict[MetadataKey, LabelValue] = Field(
        default={}, max_length=64, description="Extra labels of the pods."
    )
    pod_annotations: dict[MetadataKey, Annotated[str, Field(max_length=4096)]] = Field(
        default={}, max_length=64, description="Extra annotations of the pods."
    )
    service_account_name: ObjectName | None = Field(
        default=None, description="ServiceAccount the pods run as; unset uses the namespace's default."
    )

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> TritonServerSpec:
        """Mirror the CEL rule: one owner of the replica count."""
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError(REPLICAS_WITH_AUTOSCALING)
        return self

    def replica_count(self) -> int | None:
        """The count the operator applies to the Deployment; None under autoscaling (the HPA owns it)."""
        if self.autoscaling is not None:
            return None
        return 1 if self.replicas is None else self.replicas

    def fewest_replicas(self) -> int:
        """The fewest pods the pool runs with (what a model waits to be loaded on)."""
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas

    def most_replicas(self) -> int:
        """The most pods the pool may run with."""
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas
        return 1 if self.replicas is None else self.replicas

    @field_validator("pod_labels")
    @classmethod
    def _no_operator_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        """Mirror the CEL rule: the selector labels belong to the operator."""
        taken = sorted(set(labels) & set(OPERATOR_LABEL_KEYS))
        if taken:
            raise ValueError(
                f"podLabels must not set {', '.join(taken)}: the operator uses them to select pods"
            )
        return labels


class PodState(StatusModel):
    """What the operator observed on one Triton pod."""

    name: str = Field(max_length=253, description="Pod name.")
    ip: str | None = Field(default=None, max_length=64, description="Pod IP the operator talks to.")
    ready: bool = Field(default=False, description="Whether Triton reports ready on /v2/health/ready.")
    triton_version: str | None = Field(default=None, max_length=64, description="Triton version of the pod.")
    models_loaded: list[Annotated[str, Field(max_length=256)]] = Field(
        default=[], max_length=256, description="Models READY in this pod's repository index."
    )
    message: str | None = Field(
        default=None, max_length=4096, description="Why the pod is not ready, from Kubernetes or Triton."
    )


class Endpoints(StatusModel):
    """In-cluster addresses of the Service."""

    http: str | None = Field(default=None, max_length=512, description="HTTP/REST endpoint, host:port.")
    grpc: str | None = Field(default=None, max_length=512, description="gRPC endpoint, host:port.")
    metrics: str | None = Field(default=None, max_length=512, description="Prometheus metrics URL.")


class MetricsSummary(StatusModel):
    """Traffic and latency figures read from Triton's /metrics; unset until there is traffic."""

    inference_rate: float | None = Field(default=None, ge=0, description="Successful inferences per second.")
    failure_rate: float | None = Field(default=None, ge=0, description="Failed inferences per second.")
    p50_latency_ms: float | None = Field(default=None, ge=0, description="Median request latency, ms.")
    p99_latency_ms: float | None = Field(
        default=None, ge=0, description="99th percentile request latency, ms."
    )
    queue_p99_ms: float | None = Field(default=None, ge=0, description="99th percentile queue time, ms.")
    gpu_utilization: float | None = Field(
        default=None, ge=0, le=1, description="Mean GPU utilization, 0 to 1."
    )
    gpu_memory_used_bytes: int | None = Field(default=None, ge=0, description="GPU memory in use, bytes.")


class PodMetrics(MetricsSummary):
    """Metrics of one pod."""

    pod: str = Field(max_length=253, description="Pod name.")


class ServerMetrics(StatusModel):
    """Live metrics of the pool."""

    per_pod: list[PodMetrics] = Field(default=[], max_length=128, description="Metrics of each pod.")
    total: MetricsSummary = Field(
        default_factory=MetricsSummary, description="Rates summed and latencies worst-of across pods."
    )
    refreshed_at: str | None = Field(
        default=None,
        max_length=64,
        description="When the metrics were read (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class AutoscalingStatus(StatusModel):
    """What the autoscaler (the HPA KEDA made from the ScaledObject) says; with spec.autoscaling only."""

    scaled_object: str | None = Field(default=None, max_length=253, description="The KEDA ScaledObject.")
    horizontal_pod_autoscaler: str | None = Field(
        default=None, max_length=253, description="The HPA KEDA made from it (keda-hpa-<ScaledObject>)."
    )
    current_replicas: int | None = Field(default=None, ge=0, description="Pods the HPA last saw.")
    desired_replicas: int | None = Field(default=None, ge=0, description="Pods the HPA wants now.")
    metric: str | None = Field(default=None, max_length=64, description="spec.autoscaling.target.metric.")
    current_value: str | None = Field(
        default=None,
        max_length=64,
        description="The metric as the HPA last read it (a quantity: per replica for "
        "pendingRequestsPerReplica, microseconds for queueTimePerRequest).",
    )
    target_value: str | None = Field(
        default=None, max_length=64, description="spec.autoscaling.target.value."
    )
    last_scale_time: str | None = Field(
        default=None,
        max_length=64,
        description="When the HPA last changed the replica count (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    message: str | None = Field(
        default=None,
        max_length=4096,
        description="Why the HPA cannot scale (e.g. Prometheus answered no series), from its conditions.",
    )


class TritonServerStatus(StatusModel):
    """Observed state of a TritonServer, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed for."
    )
    conditions: list[Condition] = Field(
        default=[],
        max_length=16,
        description="Ready, Available, Progressing, Degraded, and Routed with spec.gateway; Reconciling and "
        "Stalled restate them for kstatus (Flux, kpt): Reconciling=True while the operator works toward the "
        "spec, Stalled=True when only a change to the spec (or an object it names) can end a problem.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int = Field(
        default=0, ge=0, description="Pods of the Deployment (the scale subresource reads it)."
    )
    ready_replicas: int = Field(default=0, ge=0, description="Pods whose Triton reports ready.")
    updated_replicas: int = Field(default=0, ge=0, description="Pods running the current pod template.")
    selector: str | None = Field(
        default=None, max_length=1024, description="Label selector of the pods, for the scale subresource."
    )
    triton_version: str | None = Field(
        default=None, max_length=256, description="Triton version of the pods (comma-separated when mixed)."
    )
    pods: list[PodState] = Field(
        default=[],
        max_length=128,
        description="Per-pod state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    endpoints: Endpoints | None = Field(default=None, description="Addresses clients use.")
    metrics: ServerMetrics | None = Field(default=None, description="Live traffic and latency.")
    autoscaling: AutoscalingStatus | None = Field(
        default=None, description="The autoscaler's view, with spec.autoscaling."
    )
    kopf: dict[str, Any] | None = Field(
        default=None, **preserve_unknown("Bookkeeping of the operator framework (kopf); not for users.")
    )


_READY = '.status.conditions[?(@.type=="Ready")]'

TRITONSERVER = register_kind(
    KindInfo(
        kind="TritonServer",
        plural="tritonservers",
        singular="tritonserver",
        short_names=("ts",),
        description="A pool of NVIDIA Triton Inference Server pods sharing one model repository.",
        spec_model=TritonServerSpec,
        status_model=TritonServerStatus,
        printer_columns=(
            PrinterColumn("Ready", "string", f"{_READY}.status", "Whether every replica serves."),
            # The Deployment's pods: spec.replicas or, with spec.autoscaling, the autoscaler's count.
            PrinterColumn("Replicas", "integer", ".status.replicas", "Pods of the pool."),
            PrinterColumn("Available", "integer", ".status.readyReplicas", "Pods whose Triton is ready."),
            PrinterColumn("Version", "string", ".status.tritonVersion", "Triton version of the pods."),
            PrinterColumn("Req/s", "number", ".status.metrics.total.inferenceRate", "Inferences per second."),
            PrinterColumn(
                "P99ms", "number", ".status.metrics.total.p99LatencyMs", "p99 request latency (ms)."
            ),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
            PrinterColumn(
                "Reason", "string", f"{_READY}.reason", "Reason of the Ready condition.", priority=1
            ),
            PrinterColumn("Image", "string", ".spec.image", "Triton image.", priority=1),
            PrinterColumn(
                "Desired",
                "integer",
                ".status.autoscaling.desiredReplicas",
                "Pods the autoscaler wants (spec.autoscaling).",
                priority=1,
            ),
            PrinterColumn(
                "Load",
                "string",
                ".status.autoscaling.currentValue",
                "The autoscaling metric as the HPA last read it.",
                priority=1,
            ),
            PrinterColumn(
                "Routed",
                "string",
                '.status.conditions[?(@.type=="Routed")].status',
                "Whether the Gateway accepted the routes.",
                priority=1,
            ),
        ),
        scale=ScaleSubresource(),
        root_validations=(
            cel(
                "size(self.metadata.name) <= 63",
                "metadata.name must be at most 63 characters: it names the Service and is a label value",
                reason="FieldValueInvalid",
            ),
        ),
    )
)
