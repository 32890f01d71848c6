"""TritonModel: one model staged into a TritonServer's repository and loaded on every replica."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from triton_operator.api.common import (
    GROUP,
    ApiModel,
    Condition,
    LocalObjectReference,
    ObjectName,
    StatusModel,
    cel,
    preserve_unknown,
)
from triton_operator.api.gateway import GatewayExposure
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
ROUTED_SUFFIX = "~versions"
# A model name, or a routed model's `<name>~versions` (see TritonModelSpec.repository_name).
RepositoryName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MODEL_NAME_MAX + len(ROUTED_SUFFIX),
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(~versions)?$",
    ),
]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class ModelConditionType(enum.StrEnum):
    """Condition types of a TritonModel."""

    READY = "Ready"
    STAGED = "Staged"
    LOADED = "Loaded"
    DEGRADED = "Degraded"
    PROGRESSING = "Progressing"  # routed models only: where their rollout is
    ROUTED = "Routed"  # models served through a Gateway: whether it accepted their routes
    RECONCILING = "Reconciling"  # for kstatus (Flux): working toward the spec
    STALLED = "Stalled"  # for kstatus (Flux): only a change to the spec (or what it names) ends a problem


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
        max_length=64,
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
        max_length=71,
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


# --- rollout and experiment ----------------------------------------------------------------------

# A request header, gRPC metadata key or request parameter, lower-case (HTTP/2 and gRPC lower-case them).
STICKY_KEY_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
StickyKey = Annotated[str, Field(min_length=1, max_length=64, pattern=STICKY_KEY_PATTERN)]
MAX_STEPS = 10
# Canary with no steps: 10% then 50% then 100%, each held 60 s of passing analysis.
DEFAULT_PAUSE_SECONDS = 60
DEFAULT_CANARY_STEPS: tuple[tuple[int, int], ...] = ((10, 60), (50, 60), (100, 60))
MIN_VARIANTS, MAX_VARIANTS = 2, 4
# Entries of status.traffic: a canary has two, an experiment at most MAX_VARIANTS; room to spare.
MAX_TRAFFIC_ENTRIES = 8

_STICKY_DESCRIPTION = (
    "Name of a request header, gRPC metadata key or request parameter (lower-case, e.g. x-user-id) "
    "whose value pins a request to a variant: requests with the same value always see the same version "
    "while the weights stay put, and move only to a variant whose weight grew. Unset: requests are "
    "spread by weight alone. Sent as a header or metadata it must start with x- (the TritonServer "
    "forwards only x- headers to models); as a request parameter any name works."
)


class RolloutStrategy(enum.StrEnum):
    """How a new spec.version takes over the traffic."""

    IMMEDIATE = "Immediate"
    CANARY = "Canary"


class RolloutStep(ApiModel):
    """One canary step: the canary's share of traffic, held at least pauseSeconds of passing analysis."""

    weight: int = Field(
        ge=1, le=100, description="Percent of the traffic the canary gets in this step, 1..100."
    )
    pause_seconds: int = Field(
        default=DEFAULT_PAUSE_SECONDS,
        ge=0,
        le=86_400,
        description="Seconds the step holds with analysis passing before the next step (or promotion "
        "after the last); never shorter than analysis.intervalSeconds. 0..86400, default 60.",
    )


class RolloutAnalysis(ApiModel):
    """What the canary must show, per window of one step's traffic, to move on; a failure rolls back."""

    interval_seconds: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="Seconds between analyses while a step holds (a failure rolls back within one "
        "interval); also the shortest any step lasts. 5..3600, default 30.",
    )
    min_requests: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="Requests each variant (canary and stable) needs in the window before a verdict; "
        "with fewer the step holds (Inconclusive), it never passes. Default 200.",
    )
    max_failure_ratio: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Highest ratio of failed to all requests the canary may show, 0..1 (absolute, not "
        "relative to stable). Default 0.01.",
    )
    max_latency_ratio: float | None = Field(
        default=2.0,
        ge=1,
        le=100,
        description="Highest canary p99 latency / stable p99 latency, 1..100. Default 2.0; null "
        "disables the latency check (client-side `kubectl apply` drops nulls, restoring the default: "
        "use `kubectl apply --server-side` or create).",
    )
    max_queue_ratio: float | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Highest canary queue time / stable queue time, 1..100. Default unset: no queue check.",
    )
    latency_floor_ms: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        description="Both sides of a latency or queue ratio count as at least this many ms, so "
        "sub-millisecond noise does not fail a canary. 0..1000, default 1.",
    )


def _immediate_forbids(yaml_name: str) -> dict[str, Any]:
    """The CEL rule refusing a Canary-only field under strategy Immediate."""
    return cel(
        f"self.strategy == 'Canary' || !has(self.{yaml_name})",
        f"spec.rollout.{yaml_name} applies only to strategy Canary: remove it, "
        "or set spec.rollout.strategy: Canary",
        field_path=f".{yaml_name}",
        reason="FieldValueForbidden",
    )


_CANARY_ONLY = ("steps", "analysis", "stickyKey")


class RolloutSpec(ApiModel):
    """How a new spec.version replaces the one serving: at once, or as a metric-gated canary."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_immediate_forbids(f) for f in _CANARY_ONLY],
        }
    )

    strategy: RolloutStrategy = Field(
        default=RolloutStrategy.IMMEDIATE,
        description="Immediate (default): the new version takes all traffic once READY on every "
        "replica. Canary: it takes the steps' weights one after the other while analysis passes, is "
        "promoted after the last step and rolled back to the stable version as soon as analysis fails.",
    )
    steps: list[RolloutStep] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEPS,
        description="Canary only: the canary's weights, strictly increasing (e.g. 10, 50, 100), at most "
        "10. Unset: 10%, 50%, 100%, each held 60 s. After the last step the canary is promoted.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.map(s, s.weight).isSorted()",
                    "spec.rollout.steps must raise the weight from step to step (e.g. 10, 50, 100): "
                    "put the steps in order of increasing weight",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "self.all(s, self.exists_one(t, t.weight == s.weight))",
                    "spec.rollout.steps has two steps with the same weight: remove the repeated step "
                    "(weights must increase strictly)",
                    reason="FieldValueInvalid",
                ),
            ]
        },
    )
    analysis: RolloutAnalysis | None = Field(
        default=None,
        description="Canary only: the checks each step must pass. Unset: every default (30 s interval, "
        "200 requests, failure ratio 0.01, p99 latency ratio 2).",
    )
    sticky_key: StickyKey | None = Field(default=None, description="Canary only. " + _STICKY_DESCRIPTION)

    @field_validator("steps")
    @classmethod
    def _strictly_increasing(cls, steps: list[RolloutStep] | None) -> list[RolloutStep] | None:
        """Mirror the CEL rules with rollout.plan.validate_plan's messages."""
        previous: int | None = None
        for index, step in enumerate(steps or []):
            if previous is not None and step.weight <= previous:
                raise ValueError(
                    f"spec.rollout.steps[{index}].weight: {step.weight} is not above the previous step's "
                    f"{previous}; weights must increase strictly (e.g. 10, 50, 100)"
                )
            previous = step.weight
        return steps

    @model_validator(mode="after")
    def _canary_only(self) -> RolloutSpec:
        """Mirror the CEL rules: steps, analysis and stickyKey belong to strategy Canary."""
        if self.strategy is not RolloutStrategy.CANARY:
            for name in ("steps", "analysis", "sticky_key"):
                if getattr(self, name) is not None:
                    field = to_camel(name)
                    raise ValueError(
                        f"spec.rollout.{field} applies only to strategy Canary: remove it, "
                        "or set spec.rollout.strategy: Canary"
                    )
        return self

    def effective_steps(self) -> list[tuple[int, float]]:
        """The canary's (weight, pause seconds) per step: the spec's, or 10/50/100 with 60 s pauses.

        Empty for Immediate, which has no steps.
        """
        if self.strategy is not RolloutStrategy.CANARY:
            return []
        if self.steps is None:
            return [(weight, float(pause)) for weight, pause in DEFAULT_CANARY_STEPS]
        return [(step.weight, float(step.pause_seconds)) for step in self.steps]

    def effective_analysis(self) -> RolloutAnalysis:
        """The analysis, every default filled in when unset."""
        return self.analysis if self.analysis is not None else RolloutAnalysis()


class ExperimentVariant(ApiModel):
    """One arm of an experiment: a version of this model and its fixed share of the traffic."""

    version: int = Field(
        ge=1,
        le=MAX_VERSION,
        description="Model version of the variant; its files go to <modelName>/<version>/ like "
        "spec.version's.",
    )
    weight: int = Field(
        ge=0,
        le=100,
        description="Percent of the traffic the variant gets, 0..100 (0: reachable only when pinned); "
        "the variants' weights sum to 100.",
    )
    source: ModelSource | None = Field(
        default=None,
        description="Where the variant's files come from. Required, except on the variant whose version "
        "is spec.version: its files come from spec.source, so leave it out there.",
    )


class ServerVariant(ApiModel):
    """One arm of an experiment across servers: a TritonServer serving this model and its share."""

    name: ObjectName = Field(
        description="A TritonServer in this namespace; the model is staged and loaded on it too."
    )
    weight: int = Field(
        ge=0,
        le=100,
        description="Percent of the model's traffic the Gateway sends to this server, 0..100; the servers' "
        "weights sum to 100.",
    )


class ExperimentSpec(ApiModel):
    """A held A/B split: the weights stay as written, nothing promotes.

    Either between versions of this model inside its server (variants, through an in-server router), or
    between TritonServers serving the same model (servers, through spec.gateway's routes).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.variants) != has(self.servers)",
                    "spec.experiment needs exactly one of variants (versions inside one server) or servers "
                    "(TritonServers, through spec.gateway): set one, remove the other",
                    reason="FieldValueInvalid",
                ),
            ]
        }
    )

    variants: list[ExperimentVariant] | None = Field(
        default=None,
        min_length=MIN_VARIANTS,
        max_length=MAX_VARIANTS,
        description="2 to 4 variants with distinct versions and weights summing to 100; spec.version "
        "must be one of them.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.map(v, v.weight).sum() == 100",
                    "spec.experiment.variants weights must sum to 100: adjust the weights",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "self.all(v, self.exists_one(w, w.version == v.version))",
                    "spec.experiment.variants must have distinct versions: remove or renumber the "
                    "repeated version",
                    reason="FieldValueInvalid",
                ),
            ]
        },
    )
    servers: list[ServerVariant] | None = Field(
        default=None,
        min_length=MIN_VARIANTS,
        max_length=MAX_VARIANTS,
        description="2 to 4 TritonServers of this namespace with distinct names and weights summing to 100; "
        "spec.serverRef must be one of them, and spec.gateway is required (the Gateway splits the traffic).",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.map(v, v.weight).sum() == 100",
                    "spec.experiment.servers weights must sum to 100: adjust the weights",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "self.all(v, self.exists_one(w, w.name == v.name))",
                    "spec.experiment.servers must name distinct TritonServers: remove the repeated one",
                    reason="FieldValueInvalid",
                ),
            ]
        },
    )
    sticky_key: StickyKey | None = Field(default=None, description=_STICKY_DESCRIPTION)

    @model_validator(mode="after")
    def _one_kind(self) -> ExperimentSpec:
        """Mirror the CEL rule: versions or servers, not both."""
        if (self.variants is None) == (self.servers is None):
            raise ValueError(
                "spec.experiment needs exactly one of variants (versions inside one server) or servers "
                "(TritonServers, through spec.gateway): set one, remove the other"
            )
        return self

    @field_validator("variants")
    @classmethod
    def _split(cls, variants: list[ExperimentVariant] | None) -> list[ExperimentVariant] | None:
        """Mirror the CEL rules with rollout.traffic.validate_variants' messages."""
        if variants is None:
            return None
        path = "spec.experiment.variants"
        seen: dict[int, int] = {}
        for index, variant in enumerate(variants):
            first = seen.get(variant.version)
            if first is not None:
                raise ValueError(
                    f"{path}[{index}].version: {variant.version} is already {path}[{first}]'s; "
                    "variants must differ to be told apart"
                )
            seen[variant.version] = index
        total = sum(variant.weight for variant in variants)
        if total != 100:
            raise ValueError(f"{path}: weights sum to {total}, not 100; adjust the weights")
        return variants

    @field_validator("servers")
    @classmethod
    def _pools(cls, servers: list[ServerVariant] | None) -> list[ServerVariant] | None:
        """Mirror the CEL rules on servers."""
        if servers is None:
            return None
        path = "spec.experiment.servers"
        names = [server.name for server in servers]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"{path}[{index}].name: {name} is named twice; name each server once")
        total = sum(server.weight for server in servers)
        if total != 100:
            raise ValueError(f"{path}: weights sum to {total}, not 100; adjust the weights")
        return servers

    @property
    def version_variants(self) -> list[ExperimentVariant]:
        """The in-server variants (empty for an experiment across servers)."""
        return self.variants or []


_EXPERIMENT_WITH_CANARY = (
    "spec.experiment cannot be combined with spec.rollout.strategy Canary (an experiment holds its "
    "weights, a canary moves them): remove spec.experiment or set spec.rollout.strategy: Immediate"
)
_VERSION_NOT_A_VARIANT = (
    "spec.version must be one of spec.experiment.variants[].version: add a variant for it, "
    "or set spec.version to a variant's version"
)
_VARIANT_NEEDS_SOURCE = (
    "spec.experiment.variants[].source is required for every variant whose version is not spec.version "
    "(only spec.version's files come from spec.source): add its source"
)
_VARIANT_SOURCE_IS_SPEC_SOURCE = (
    "spec.experiment.variants[].source must be left out on the variant with spec.version (its files come "
    "from spec.source): remove it, or change spec.source"
)


_SERVERS_NEED_GATEWAY = (
    "spec.experiment.servers splits traffic between TritonServers through a Gateway: set spec.gateway "
    "(parentRefs of the Gateway)"
)
_SERVER_REF_NOT_A_VARIANT = (
    "spec.serverRef.name must be one of spec.experiment.servers[].name: add it, or point serverRef at one"
)
_GATEWAY_WITH_VERSION_VARIANTS = (
    "spec.experiment.variants (versions inside one server) cannot be combined with spec.gateway: split "
    "across servers with spec.experiment.servers, or remove spec.gateway"
)
_GATEWAY_IMMUTABLE = (
    "spec.gateway cannot be added or removed (a model is served either by its server directly or through "
    "a Gateway across servers): create a new TritonModel instead"
)


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
                ),
                cel(
                    "!has(self.experiment) || !has(self.rollout) || self.rollout.strategy != 'Canary'",
                    _EXPERIMENT_WITH_CANARY,
                    field_path=".experiment",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "!has(self.experiment) || !has(self.experiment.variants) || "
                    "self.experiment.variants.exists(v, v.version == self.version)",
                    _VERSION_NOT_A_VARIANT,
                    field_path=".version",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "!has(self.experiment) || !has(self.experiment.variants) || "
                    "self.experiment.variants.all(v, has(v.source) || v.version == self.version)",
                    _VARIANT_NEEDS_SOURCE,
                    field_path=".experiment.variants",
                    reason="FieldValueRequired",
                ),
                cel(
                    "!has(self.experiment) || !has(self.experiment.variants) || "
                    "self.experiment.variants.all(v, !has(v.source) || v.version != self.version)",
                    _VARIANT_SOURCE_IS_SPEC_SOURCE,
                    field_path=".experiment.variants",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "!has(self.experiment) || !has(self.experiment.servers) || has(self.gateway)",
                    _SERVERS_NEED_GATEWAY,
                    field_path=".gateway",
                    reason="FieldValueRequired",
                ),
                cel(
                    "!has(self.experiment) || !has(self.experiment.servers) || "
                    "self.experiment.servers.exists(v, v.name == self.serverRef.name)",
                    _SERVER_REF_NOT_A_VARIANT,
                    field_path=".serverRef",
                    reason="FieldValueInvalid",
                ),
                cel(
                    "!has(self.gateway) || !has(self.experiment) || !has(self.experiment.variants)",
                    _GATEWAY_WITH_VERSION_VARIANTS,
                    field_path=".experiment.variants",
                    reason="FieldValueForbidden",
                ),
                cel(
                    "has(self.gateway) == has(oldSelf.gateway)",
                    _GATEWAY_IMMUTABLE,
                    field_path=".gateway",
                    reason="FieldValueForbidden",
                ),
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
    rollout: RolloutSpec | None = Field(
        default=None,
        description="How a new spec.version takes over from the one serving. Unset: Immediate.",
    )
    experiment: ExperimentSpec | None = Field(
        default=None,
        description="A held A/B split of the traffic between versions of this model (spec.version and "
        "others, each with its own source), or between TritonServers (with spec.gateway); not with "
        "spec.rollout.strategy Canary.",
    )
    gateway: GatewayExposure | None = Field(
        default=None,
        description="Serve the model through a Gateway API Gateway, on one TritonServer or split across "
        "several (spec.experiment.servers, or a canary when spec.serverRef changes under strategy Canary). "
        "The operator places a copy on each server as a TritonModel of its own (<name>-on-<server>) and "
        "owns an HTTPRoute (path /v2/models/<modelName>) and, with hostnames, a GRPCRoute. Cannot be added "
        "or removed later.",
    )

    @model_validator(mode="after")
    def _experiment_rules(self) -> TritonModelSpec:
        """Mirror the CEL rules that tie spec.experiment to spec.version, spec.source and spec.rollout."""
        experiment = self.experiment
        if experiment is None:
            return self
        if self.rollout is not None and self.rollout.strategy is RolloutStrategy.CANARY:
            raise ValueError(_EXPERIMENT_WITH_CANARY)
        if experiment.servers is not None:
            if self.gateway is None:
                raise ValueError(_SERVERS_NEED_GATEWAY)
            if all(server.name != self.server_ref.name for server in experiment.servers):
                raise ValueError(f"{_SERVER_REF_NOT_A_VARIANT} (serverRef {self.server_ref.name})")
            return self
        if self.gateway is not None:
            raise ValueError(_GATEWAY_WITH_VERSION_VARIANTS)
        path = "spec.experiment.variants"
        if all(variant.version != self.version for variant in experiment.version_variants):
            versions = ", ".join(str(variant.version) for variant in experiment.version_variants)
            raise ValueError(f"{_VERSION_NOT_A_VARIANT} (spec.version {self.version}, variants {versions})")
        for index, variant in enumerate(experiment.version_variants):
            if variant.source is None and variant.version != self.version:
                raise ValueError(f"{path}[{index}].source: {_VARIANT_NEEDS_SOURCE}")
            if variant.source is not None and variant.version == self.version:
                raise ValueError(f"{path}[{index}].source: {_VARIANT_SOURCE_IS_SPEC_SOURCE}")
        return self

    def effective_rollout(self) -> RolloutSpec:
        """spec.rollout, or the Immediate strategy when unset."""
        return self.rollout if self.rollout is not None else RolloutSpec()

    def variant_source(self, version: int) -> ModelSource | None:
        """Where the files of one version of this model come from: spec.source or its variant's."""
        if version == self.version:
            return self.source
        variants = self.experiment.version_variants if self.experiment is not None else []
        return next((v.source for v in variants if v.version == version), None)

    def variant_specs(self) -> list[TritonModelSpec]:
        """The spec of each experiment variant other than spec.version: its version from its own source."""
        if self.experiment is None:
            return []
        return [
            self.model_copy(update={"version": v.version, "source": v.source})
            for v in self.experiment.version_variants
            if v.version != self.version and v.source is not None
        ]

    def resolved_model_name(self, resource_name: str) -> str:
        """modelName, or the resource's name when unset: the name clients call."""
        return self.model_name or resource_name

    @property
    def routed(self) -> bool:
        """Whether clients reach the versions through the in-server router (a canary rollout or an
        experiment); never for a model served through a Gateway (its copies on each server decide)."""
        if self.gateway is not None:
            return False
        return self.experiment is not None or self.effective_rollout().strategy == RolloutStrategy.CANARY

    @property
    def through_gateway(self) -> bool:
        """Whether the model is placed on its servers as copies and routed by the Gateway."""
        return self.gateway is not None

    def pool_weights(self) -> dict[str, int] | None:
        """An experiment across servers: server -> weight; None otherwise."""
        if self.experiment is None or self.experiment.servers is None:
            return None
        return {server.name: server.weight for server in self.experiment.servers}

    def repository_name(self, resource_name: str) -> str:
        """The folder (and Triton name) the versions are staged and loaded under.

        A routed model's public name belongs to its router, so its versions live beside it under
        `<name>~versions` (`~` is outside the modelName pattern: no other model can be called so).
        """
        public = self.resolved_model_name(resource_name)
        return public + ROUTED_SUFFIX if self.routed else public


def check_model_name(name: str) -> str:
    """A Triton-valid model name or ValueError naming the fix (for metadata.name used as the model name)."""
    if not re.match(MODEL_NAME_PATTERN, name) or len(name) > MODEL_NAME_MAX:
        raise ValueError(f"model name {name!r} is not a valid Triton model name: set spec.modelName")
    return name


class StagedSpec(ApiModel):
    """What the staging Job stages (passed to `triton-operator stage --spec`); never holds secrets."""

    model_name: RepositoryName = Field(description="Folder (and Triton name) in the model repository.")
    version: int = Field(ge=1, le=MAX_VERSION, description="Version folder.")
    source: ModelSource = Field(description="Where the files come from.")
    config: DeclaredConfig | None = Field(default=None, description="Declared config, if any.")

    @classmethod
    def from_spec(cls, resource_name: str, spec: TritonModelSpec) -> StagedSpec:
        """The staged part of a TritonModel spec."""
        return cls(
            model_name=spec.repository_name(resource_name),
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
    node: str | None = Field(default=None, max_length=253, description="Node the pod runs on.")
    repository: str | None = Field(
        default=None,
        max_length=16,
        description="Where this pod reads the model's files: PVC (the server's repository PVC, layout "
        "Shared) or OwnCopy (the pod's own copy of it, layout PerReplica).",
    )
    copy_digest: str | None = Field(
        default=None,
        max_length=128,
        description="OwnCopy: the staged digest of the wanted version in this pod's copy (unset while "
        "the copy does not have it).",
    )
    copy_current: bool | None = Field(
        default=None,
        description="OwnCopy: whether this pod's copy of the model is exactly the repository's (files "
        "checked by sha256); the model is loaded here only once it is.",
    )


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


class RolloutPhase(enum.StrEnum):
    """Where a canary rollout is (rollout.machine.Phase)."""

    PROGRESSING = "Progressing"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


class AnalysisVerdict(enum.StrEnum):
    """An analysis verdict (rollout.analysis.Verdict)."""

    SUCCESSFUL = "Successful"
    INCONCLUSIVE = "Inconclusive"
    FAILED = "Failed"


class TrafficRole(enum.StrEnum):
    """What a version is in the current split: a canary's stable or canary, or an experiment's variant."""

    STABLE = "stable"
    CANARY = "canary"
    VARIANT = "variant"


class RolloutStatus(StatusModel):
    """The canary rollout as the operator keeps it (rollout.machine.RolloutState.to_status, and more)."""

    phase: RolloutPhase | None = Field(
        default=None, description="Progressing, Promoted, RolledBack or Aborted."
    )
    stable_version: str | None = Field(
        default=None, max_length=64, description="Version that served before the canary (the baseline)."
    )
    canary_version: str | None = Field(default=None, max_length=64, description="Version being rolled out.")
    stable_server: str | None = Field(
        default=None,
        max_length=253,
        description="A canary across servers: the TritonServer that served before.",
    )
    canary_server: str | None = Field(
        default=None, max_length=253, description="A canary across servers: the TritonServer taking over."
    )
    step_index: int | None = Field(default=None, ge=0, description="Current step, 0-based.")
    steps: int | None = Field(default=None, ge=0, description="Number of steps of the plan.")
    canary_weight: int | None = Field(
        default=None, ge=0, le=100, description="Percent of the traffic the canary gets now."
    )
    step_started_at: str | None = Field(
        default=None,
        max_length=64,
        description="When the current step began (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    next_decision_at: str | None = Field(
        default=None,
        max_length=64,
        description="When the operator decides next (RFC 3339); unset once the rollout ended.",
        json_schema_extra={"format": "date-time"},
    )
    reason: str | None = Field(
        default=None, max_length=1024, description="CamelCase reason of the last decision."
    )
    message: str | None = Field(
        default=None, max_length=32768, description="What the last decision did and why, with the numbers."
    )
    last_verdict: AnalysisVerdict | None = Field(
        default=None, description="Verdict of the last analysis: Successful, Inconclusive or Failed."
    )
    last_verdict_message: str | None = Field(
        default=None, max_length=32768, description="The last analysis's checks, measured against limits."
    )
    last_command_token: str | None = Field(
        default=None, max_length=1024, description="Token of the last manual command handled (once each)."
    )


class VariantTraffic(StatusModel):
    """One version's share of the model's traffic, desired and observed, in the current window."""

    version: str = Field(max_length=64, description="Model version.")
    server: str | None = Field(
        default=None,
        max_length=253,
        description="The TritonServer (a split across servers through a Gateway).",
    )
    role: TrafficRole = Field(description="stable or canary (a canary rollout), or variant (an experiment).")
    desired_weight: int = Field(ge=0, le=100, description="Percent of the traffic the version should get.")
    observed_share: float | None = Field(
        default=None, ge=0, le=100, description="Percent of the inferences it served in the window."
    )
    requests: int | None = Field(default=None, ge=0, description="Requests it served in the current window.")
    requests_per_second: float | None = Field(default=None, ge=0, description="Requests per second.")
    failure_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Failed / all requests in the window, 0..1."
    )
    p50_ms: float | None = Field(default=None, ge=0, description="Median request latency in the window, ms.")
    p99_ms: float | None = Field(
        default=None, ge=0, description="99th percentile request latency in the window, ms."
    )


class StagedVariant(StatusModel):
    """An experiment's other version, staged from its own source."""

    version: int = Field(ge=1, description="The variant's model version.")
    job: str = Field(max_length=63, description="The Job that staged its files.")
    digest: str | None = Field(default=None, max_length=128, description="Digest of the files it staged.")


class TritonModelStatus(StatusModel):
    """Observed state of a TritonModel, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed for."
    )
    conditions: list[Condition] = Field(
        default=[],
        max_length=16,
        description="Ready, Staged, Loaded and Degraded; Progressing when routed; Routed with spec.gateway; "
        "Reconciling and Stalled restate them for kstatus (Flux, kpt): Reconciling=True while the operator "
        "works toward the spec, Stalled=True when only a change to the spec (or an object it names) can end "
        "a problem (a rolled-back or aborted canary, a failed staging, a missing server).",
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
    staged_variants: list[StagedVariant] = Field(
        default=[],
        max_length=MAX_TRAFFIC_ENTRIES,
        description="An experiment's other versions: the Job that staged each and its digest (a restarted "
        "operator resumes from them instead of staging again).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["version"]},
    )
    rollout: RolloutStatus | None = Field(
        default=None, description="The canary rollout: phase, step, weights and the last verdict."
    )
    traffic: list[VariantTraffic] = Field(
        default=[],
        max_length=MAX_TRAFFIC_ENTRIES,
        description="Per version: desired weight, observed share and the window's requests and latency.",
    )
    kopf: dict[str, Any] | None = Field(
        default=None, **preserve_unknown("Bookkeeping of the operator framework (kopf); not for users.")
    )


_READY = '.status.conditions[?(@.type=="Ready")]'
_CANARY = '.status.traffic[?(@.role=="canary")]'
# The label reconcile.split puts on each copy (SPLIT_OF_LABEL), its dots escaped for JSONPath.
_SPLIT_OF = GROUP.replace(".", "\\.") + "/split-of"
_SPLIT_SHARE = GROUP.replace(".", "\\.") + "/split-share"  # render.labels.SPLIT_SHARE_ANNOTATION

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
            # From status.traffic's canary entry, which exists only while a canary is on its way (or was
            # rolled back): empty at rest. status.rollout keeps the last rollout's versions and weight
            # after it ended (a model at rest read "1 1 100"); VERSION is the stable version meanwhile.
            PrinterColumn("Canary", "string", f"{_CANARY}.version", "Version being rolled out, if any."),
            PrinterColumn(
                "Weight", "integer", f"{_CANARY}.desiredWeight", "Canary's percent of the traffic, if any."
            ),
            PrinterColumn(
                "Split-Of",
                "string",
                f".metadata.labels.{_SPLIT_OF}",
                "A copy placed on SERVER by a split through a Gateway: the TritonModel it is a copy of.",
            ),
            PrinterColumn(
                "Share",
                "string",
                f".metadata.annotations.{_SPLIT_SHARE}",
                "A copy's percent of its model's traffic through the Gateway.",
            ),
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
