"""TritonModel: one model staged into a TritonServer's repository and loaded on every replica."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from triton_operator.api.common import (
    ApiModel,
    Condition,
    LocalObjectReference,
    ObjectName,
    StatusModel,
    cel,
    preserve_unknown,
)
from triton_operator.api.kinds import KindInfo, PrinterColumn, register_kind

# A Triton model name is a folder of the repository: no '/', no leading '.', no spaces.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
MODEL_NAME_MAX = 200
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_VERSION = 2**31 - 1

# Triton's data types without the TYPE_ prefix (model_config.proto's DataType, TYPE_INVALID aside);
# a unit test keeps this equal to model_builders.signature.DATATYPES.
DATA_TYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "STRING",
    "BF16",
)

ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class ModelConditionType(enum.StrEnum):
    """Condition types of a TritonModel."""

    READY = "Ready"
    STAGED = "Staged"
    LOADED = "Loaded"
    DEGRADED = "Degraded"


class CredentialsSecret(ApiModel):
    """A Secret in the same namespace holding S3 credentials; the staging Job reads them as env vars."""

    name: ObjectName = Field(description="Name of the Secret.")
    access_key_id_key: SecretKey = Field(
        default="AWS_ACCESS_KEY_ID", description="Key of the Secret that holds the access key id."
    )
    secret_access_key_key: SecretKey = Field(
        default="AWS_SECRET_ACCESS_KEY", description="Key of the Secret that holds the secret access key."
    )


class S3Source(ApiModel):
    """A model folder published to S3 by `model-builders publish` (the prefix holds manifest.json)."""

    bucket: str = Field(
        min_length=3,
        max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
        description="Bucket name.",
    )
    prefix: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^/\s]([^\s]*[^/\s])?$",
        description="Key prefix of the published model folder (no leading or trailing '/'), e.g. mnist/v1; "
        "<prefix>/manifest.json must exist.",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="S3 endpoint URL for S3-compatible stores (MinIO, Ceph); unset uses AWS.",
    )
    region: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z0-9-]+$",
        description="Region of the bucket, e.g. us-east-1.",
    )
    credentials_secret: CredentialsSecret | None = Field(
        default=None,
        description="Secret with the access key; unset reads the bucket anonymously (public buckets).",
    )


class HttpSource(ApiModel):
    """A single file over HTTP(S): a model file, or a .tar.gz/.tgz/.tar/.zip of a model folder."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="http:// or https:// URL. Archives (.tar.gz, .tgz, .tar, .zip) are unpacked as a model "
        "folder; any other file is placed in the version folder under its URL's file name.",
    )
    sha256: str = Field(
        pattern=SHA256_PATTERN,
        description="Lower-case hex sha256 of the file; staging fails when the download differs.",
    )


class PvcSource(ApiModel):
    """A model folder inside another PersistentVolumeClaim of the same namespace."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.path.split('/').exists(p, p == '..')",
                    "source.pvc.path must stay inside the claim: remove '..'",
                    field_path=".path",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    claim_name: ObjectName = Field(description="Name of the PVC (mounted read-only by the staging Job).")
    path: str = Field(
        default="",
        max_length=1024,
        pattern=r"^[^/\s]?\S*$",
        description="Folder of the model inside the claim, relative to its root; empty is the root.",
    )

    @field_validator("path")
    @classmethod
    def _inside_claim(cls, path: str) -> str:
        """Mirror the CEL rule: no '..' component."""
        if ".." in path.split("/"):
            raise ValueError("source.pvc.path must stay inside the claim: remove '..'")
        return path


_ONE_SOURCE = "(has(self.s3) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1"


class ModelSource(ApiModel):
    """Where the model's files come from: exactly one of s3, http or pvc."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    _ONE_SOURCE,
                    "set exactly one of source.s3, source.http or source.pvc",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "!has(self.http) || !has(self.digest) || self.digest == 'sha256:' + self.http.sha256",
                    "with source.http, source.digest must be 'sha256:' + source.http.sha256 "
                    "(or leave digest unset)",
                    field_path=".digest",
                    reason="FieldValueInvalid",
                ),
            ]
        }
    )

    s3: S3Source | None = Field(default=None, description="A folder published to S3 by model-builders.")
    http: HttpSource | None = Field(default=None, description="A single file or archive over HTTP(S).")
    pvc: PvcSource | None = Field(default=None, description="A folder in another PVC of this namespace.")
    digest: str | None = Field(
        default=None,
        pattern=DIGEST_PATTERN,
        description="Expected overall digest (sha256:<64 hex>) as printed by `model-builders publish`; "
        "staging fails on a mismatch. With http it equals 'sha256:' + http.sha256.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        """Mirror the CEL rules."""
        chosen = [name for name in ("s3", "http", "pvc") if getattr(self, name) is not None]
        if len(chosen) != 1:
            found = ", ".join(chosen) or "none"
            raise ValueError(f"set exactly one of source.s3, source.http or source.pvc (found: {found})")
        if self.http is not None and self.digest is not None and self.digest != "sha256:" + self.http.sha256:
            raise ValueError("with source.http, source.digest must be 'sha256:' + source.http.sha256")
        return self

    def expected_digest(self) -> str | None:
        """The digest known before fetching anything (spec.digest, or the HTTP file's sha256)."""
        if self.digest is not None:
            return self.digest
        return "sha256:" + self.http.sha256 if self.http is not None else None


class DataType(enum.StrEnum):
    """A Triton tensor data type (TYPE_ prefix left out)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    STRING = "STRING"
    BF16 = "BF16"


class Tensor(ApiModel):
    """One input or output tensor."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^\S+$", description="Tensor name.")
    data_type: DataType = Field(description="Data type without the TYPE_ prefix: FP32, INT64, STRING, ...")
    dims: list[Annotated[int, Field(ge=-1)]] = Field(
        max_length=16,
        description="Shape without the batch dimension (when maxBatchSize > 0); -1 is any size, [] a scalar.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(d, d != 0)", "dims must be >= 1, or -1 for any size", reason="FieldValueInvalid"
                )
            ]
        },
    )

    @field_validator("dims")
    @classmethod
    def _no_zero(cls, dims: list[int]) -> list[int]:
        """Mirror the CEL rule."""
        if 0 in dims:
            raise ValueError("dims must be >= 1, or -1 for any size")
        return dims


class DynamicBatching(ApiModel):
    """Triton's dynamic batcher."""

    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default=[],
        max_length=16,
        description="Batch sizes the batcher prefers to form (each <= maxBatchSize).",
    )
    max_queue_delay_microseconds: int | None = Field(
        default=None, ge=0, le=60_000_000, description="How long a request may wait to join a batch, in µs."
    )


class InstanceKind(enum.StrEnum):
    """Where model instances run."""

    CPU = "CPU"
    GPU = "GPU"
    AUTO = "AUTO"


class InstanceGroup(ApiModel):
    """A group of model instances."""

    kind: InstanceKind = Field(default=InstanceKind.AUTO, description="CPU, GPU or AUTO (Triton decides).")
    count: int = Field(default=1, ge=1, le=64, description="Instances in the group (per GPU for GPU).")


class DeclaredConfig(ApiModel):
    """config.pbtxt declared in the resource; it replaces any config.pbtxt in the artifact."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.backend) || has(self.platform)",
                    "config needs backend (e.g. python, onnxruntime) or platform (e.g. onnxruntime_onnx)",
                    reason="FieldValueRequired",
                ),
                cel(
                    "!has(self.dynamicBatching) || self.maxBatchSize > 0",
                    "config.dynamicBatching needs config.maxBatchSize > 0",
                    field_path=".dynamicBatching",
                    reason="FieldValueInvalid",
                ),
            ]
        }
    )

    backend: str | None = Field(
        default=None, max_length=64, pattern=r"^[a-z0-9_]+$", description="Triton backend, e.g. python."
    )
    platform: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9_]+$",
        description="Triton platform, e.g. onnxruntime_onnx, pytorch_libtorch, ensemble.",
    )
    max_batch_size: int = Field(
        default=0,
        ge=0,
        le=1_048_576,
        description="Largest batch; 0 disables batching (dims are full shapes).",
    )
    inputs: list[Tensor] = Field(default=[], max_length=128, description="Input tensors.")
    outputs: list[Tensor] = Field(default=[], max_length=128, description="Output tensors.")
    dynamic_batching: DynamicBatching | None = Field(default=None, description="Enable the dynamic batcher.")
    instance_groups: list[InstanceGroup] = Field(
        default=[], max_length=16, description="Model instances; empty lets Triton choose."
    )
    parameters: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=4096)]] = Field(
        default={}, max_length=64, description="Backend parameters (string values), e.g. EXECUTION_ENV_PATH."
    )

    @model_validator(mode="after")
    def _mirror_rules(self) -> DeclaredConfig:
        """Mirror the CEL rules."""
        if self.backend is None and self.platform is None:
            raise ValueError(
                "config needs backend (e.g. python, onnxruntime) or platform (e.g. onnxruntime_onnx)"
            )
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            raise ValueError("config.dynamicBatching needs config.maxBatchSize > 0")
        return self


class TritonModelSpec(ApiModel):
    """Desired state of a TritonModel: which server, which files, which version, which config."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.modelName) == has(oldSelf.modelName) && "
                    "(!has(self.modelName) || self.modelName == oldSelf.modelName)",
                    "modelName is immutable (clients call the model by it); create a new TritonModel instead",
                    field_path=".modelName",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    server_ref: LocalObjectReference = Field(
        description="The TritonServer in this namespace that serves the model."
    )
    model_name: ModelName | None = Field(
        default=None,
        description="Name clients call the model by (Triton's model name and repository folder); "
        "defaults to metadata.name. Immutable.",
    )
    version: int = Field(
        default=1,
        ge=1,
        le=MAX_VERSION,
        description="Version served: the files go to <modelName>/<version>/ in the server's repository.",
    )
    source: ModelSource = Field(description="Where the files come from.")
    config: DeclaredConfig | None = Field(
        default=None,
        description="Declared config.pbtxt. Unset: the artifact's config.pbtxt is used (it must have one). "
        "Set: it wins and the artifact's config.pbtxt is ignored.",
    )
    keep_files_on_delete: bool = Field(
        default=True,
        description="Deleting the TritonModel unloads it; its files stay in the repository unless false.",
    )

    def resolved_model_name(self, resource_name: str) -> str:
        """modelName, or the resource's name when unset."""
        return self.model_name or resource_name


def check_model_name(name: str) -> str:
    """A Triton-valid model name or ValueError naming the fix (for metadata.name used as the model name)."""
    if not re.match(MODEL_NAME_PATTERN, name) or len(name) > MODEL_NAME_MAX:
        raise ValueError(f"model name {name!r} is not a valid Triton model name: set spec.modelName")
    return name


class StagedSpec(ApiModel):
    """What the staging Job stages (passed to `triton-operator stage --spec`); never holds secrets."""

    model_name: ModelName = Field(description="Triton model name.")
    version: int = Field(ge=1, le=MAX_VERSION, description="Version folder.")
    source: ModelSource = Field(description="Where the files come from.")
    config: DeclaredConfig | None = Field(default=None, description="Declared config, if any.")

    @classmethod
    def from_spec(cls, resource_name: str, spec: TritonModelSpec) -> StagedSpec:
        """The staged part of a TritonModel spec."""
        return cls(
            model_name=spec.resolved_model_name(resource_name),
            version=spec.version,
            source=spec.source,
            config=spec.config,
        )


# --- status --------------------------------------------------------------------------------------


class ReplicaState(enum.StrEnum):
    """Load state of the model on one replica (Triton's repository index states, plus PENDING)."""

    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADED = "UNLOADED"
    PENDING = "PENDING"


class ReplicaStatus(StatusModel):
    """The model on one Triton pod."""

    pod: str = Field(max_length=253, description="Pod name.")
    ip: str | None = Field(default=None, max_length=64, description="Pod IP the operator talked to.")
    state: ReplicaState = Field(
        description="READY, LOADING, UNAVAILABLE, UNLOADED or PENDING (not tried yet)."
    )
    reason: str | None = Field(default=None, max_length=4096, description="Triton's reason when not READY.")


class ModelEndpoints(StatusModel):
    """How clients reach the model."""

    http: str | None = Field(default=None, max_length=512, description="HTTP/REST endpoint, host:port.")
    grpc: str | None = Field(default=None, max_length=512, description="gRPC endpoint, host:port.")
    model: str | None = Field(
        default=None, max_length=1024, description="HTTP inference path, e.g. /v2/models/<name>/infer."
    )


class ModelMetrics(StatusModel):
    """Traffic and latency of the model summed over replicas, read from Triton's /metrics."""

    request_rate: float | None = Field(default=None, ge=0, description="Requests per second.")
    failure_rate: float | None = Field(default=None, ge=0, description="Failed requests per second.")
    success_count: int | None = Field(default=None, ge=0, description="Successful requests (counter).")
    failure_count: int | None = Field(default=None, ge=0, description="Failed requests (counter).")
    p50_latency_ms: float | None = Field(default=None, ge=0, description="Median request latency, ms.")
    p99_latency_ms: float | None = Field(
        default=None, ge=0, description="99th percentile request latency, ms."
    )
    avg_queue_ms: float | None = Field(
        default=None, ge=0, description="Mean time a request waits queued, ms."
    )
    inferences_per_execution: float | None = Field(
        default=None, ge=0, description="Inferences per model execution (the achieved batch size)."
    )
    refreshed_at: str | None = Field(
        default=None,
        max_length=64,
        description="When the metrics were read (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class TritonModelStatus(StatusModel):
    """Observed state of a TritonModel, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed for."
    )
    conditions: list[Condition] = Field(
        default=[],
        max_length=16,
        description="Ready, Staged, Loaded and Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    served_version: int | None = Field(default=None, ge=1, description="Version the replicas serve.")
    staged_digest: str | None = Field(
        default=None, max_length=128, description="Digest of the files staged in the repository."
    )
    loaded: str | None = Field(
        default=None, max_length=32, description="Replicas with the model READY, as loaded/total (e.g. 2/3)."
    )
    replicas: list[ReplicaStatus] = Field(
        default=[],
        max_length=128,
        description="Load state on each replica.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["pod"]},
    )
    endpoints: ModelEndpoints | None = Field(default=None, description="How clients reach the model.")
    metrics: ModelMetrics | None = Field(default=None, description="Live traffic and latency.")
    staging_job: str | None = Field(
        default=None, max_length=63, description="Name of the Job that staged (or is staging) the files."
    )
    kopf: dict[str, Any] | None = Field(
        default=None, **preserve_unknown("Bookkeeping of the operator framework (kopf); not for users.")
    )


_READY = '.status.conditions[?(@.type=="Ready")]'

TRITONMODEL = register_kind(
    KindInfo(
        kind="TritonModel",
        plural="tritonmodels",
        singular="tritonmodel",
        short_names=("tm",),
        description="A model staged into a TritonServer's model repository and loaded on every replica.",
        spec_model=TritonModelSpec,
        status_model=TritonModelStatus,
        printer_columns=(
            PrinterColumn("Ready", "string", f"{_READY}.status", "Whether every replica serves the model."),
            PrinterColumn("Server", "string", ".spec.serverRef.name", "The TritonServer."),
            PrinterColumn("Version", "integer", ".status.servedVersion", "Version served."),
            PrinterColumn("Loaded", "string", ".status.loaded", "Replicas with the model ready."),
            PrinterColumn("Req/s", "number", ".status.metrics.requestRate", "Requests per second."),
            PrinterColumn("P99ms", "number", ".status.metrics.p99LatencyMs", "p99 request latency (ms)."),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
            PrinterColumn(
                "Reason", "string", f"{_READY}.reason", "Reason of the Ready condition.", priority=1
            ),
        ),
        root_validations=(
            cel(
                f"has(self.spec.modelName) || (self.metadata.name.matches('{MODEL_NAME_PATTERN}') "
                f"&& size(self.metadata.name) <= {MODEL_NAME_MAX})",
                "metadata.name is not a valid Triton model name: set spec.modelName",
                reason="FieldValueInvalid",
            ),
        ),
    )
)
