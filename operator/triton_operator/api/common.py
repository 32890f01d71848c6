"""Building blocks shared by every kind: the camelCase base model, Condition, enums, quantities."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "tritonoperator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "triton"
FINALIZER = f"{GROUP}/finalizer"

# A non-negative Kubernetes quantity (resource.Quantity without a sign): "500m", "2", "1.5", "16Gi", "1e3".
# Every string it accepts is also accepted by the apiserver's ParseQuantity, so CEL's quantity() works on it.
QUANTITY_PATTERN = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)

# Label values: at most 63 characters, alphanumerics with '-', '_', '.' inside (IsValidLabelValue).
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Object names that are DNS-1123 subdomains (Secrets, ConfigMaps, PVCs, ServiceAccounts).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _check_quantity(value: str) -> str:
    """Reject strings that are not non-negative Kubernetes quantities, with the fix in the message."""
    if not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity; write it like 500m, 2, 1.5, 512Mi or 16Gi")
    return value


# A quantity field: in the CRD a string with a pattern (not int-or-string, so the pattern can apply).
Quantity = Annotated[
    str,
    AfterValidator(_check_quantity),
    WithJsonSchema({"type": "string", "pattern": QUANTITY_PATTERN, "maxLength": 64}),
]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
# Keys of labels/annotations/nodeSelector: prefix (253) + "/" + name (63).
MetadataKey = Annotated[str, Field(max_length=317)]


def preserve_unknown(description: str) -> dict[str, Any]:
    """Field keyword arguments for a free-form object kept as written (affinity, valueFrom)."""
    return {"description": description, "json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True}}


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """One x-kubernetes-validations entry; reason is one of FieldValueInvalid/Forbidden/Required/Duplicate.

    A rule's pydantic validator (and the engine's precondition, for steps and weights) repeats it;
    tests/unit/test_validation_rules.py runs one table of examples through all of them, and fails on a
    rule without an example.
    """
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        use_enum_values=False,
    )


class StatusModel(ApiModel):
    """Base of status models: tolerant of fields written by newer operators or by kopf."""

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(enum.StrEnum):
    """Status of a condition, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(enum.StrEnum):
    """Condition types written by the operator on both kinds."""

    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    # Only on objects exposed through a Gateway (spec.gateway): whether the gateway accepted the routes.
    ROUTED = "Routed"
    # Only on servers whose pods are to be scraped through a PodMonitor: whether it is in place.
    MONITORED = "Monitored"
    # Only on servers with spec.autoscaling: whether the autoscaler is in place and can read its metric.
    AUTOSCALED = "Autoscaled"
    # What kstatus (Flux, kpt, cli-utils) reads: True while the operator works toward the spec, and True
    # when only a change to the spec (or an object it names) can end a problem. Never both True.
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class ImagePullPolicy(enum.StrEnum):
    """When the kubelet pulls the image."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class Condition(StatusModel):
    """One observation of the object's state (the shape of metav1.Condition)."""

    type: str = Field(
        description="Type of condition in CamelCase: Ready, Available, Progressing, Degraded, Reconciling, "
        "Stalled (and for models Staged, Loaded; with spec.gateway Routed).",
        min_length=1,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object this condition was computed for; "
        "older than metadata.generation means the condition is stale.",
    )
    last_transition_time: str = Field(
        description="Last time the condition's status changed (RFC 3339).",
        max_length=64,
        json_schema_extra={"format": "date-time"},
    )
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable sentence with details about the transition."
    )


class LocalObjectReference(ApiModel):
    """Reference to an object by name in the same namespace."""

    name: ObjectName = Field(description="Name of the referenced object.")


# Labels the operator puts on every child; users may not override them (they select pods).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR_LABEL_KEYS = (LABEL_NAME, LABEL_INSTANCE, LABEL_COMPONENT, LABEL_MANAGED_BY)


def cel_string_list(values: tuple[str, ...]) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"
