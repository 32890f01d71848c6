"""TritonServer's `spec.monitoring`: the Prometheus Operator PodMonitor the operator makes for its pods."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from triton_operator.api.common import ApiModel, LabelValue, MetadataKey

# The Prometheus Operator's Duration (monitoring.coreos.com/v1): 30s, 1m30s, 500ms, 0.
DURATION_PATTERN = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
# A label name: an optional DNS-subdomain prefix and "/", then up to 63 characters (IsQualifiedName).
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
LABEL_KEY_MESSAGE = (
    "monitoring.podMonitor.labels keys must be label names: up to 63 letters, digits, '-', '_' or '.' "
    "(starting and ending with a letter or digit), with an optional DNS prefix and '/' (e.g. release)"
)


class PodMonitorSettings(ApiModel):
    """The PodMonitor (monitoring.coreos.com/v1) that has Prometheus scrape this server's pods."""

    enabled: bool | None = Field(
        default=None,
        description="Create a PodMonitor for the pods' `metrics` port. Unset: the operator's setting (the "
        "chart's metrics.podMonitor.enabled); false opts this server out.",
    )
    # Values (63) and keys (317) are bounded at admission. The name part of a key is checked by the
    # operator (InvalidSpec): a CEL `matches` over map keys has no length bound for the API server's cost
    # estimate, which would refuse the CRD.
    labels: dict[MetadataKey, LabelValue] = Field(
        default={},
        max_length=32,
        description="Labels of the PodMonitor, over the operator's (e.g. release: kube-prometheus-stack, the "
        "label kube-prometheus-stack's Prometheus selects monitors by).",
    )
    interval: str | None = Field(
        default=None,
        max_length=32,
        pattern=DURATION_PATTERN,
        description="How often Prometheus scrapes each pod, e.g. 30s or 1m. Unset: the operator's setting.",
    )

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        """Label names only (the API server would refuse the PodMonitor later, with less to say)."""
        bad = sorted(key for key in labels if not _LABEL_KEY.match(key))
        if bad:
            raise ValueError(f"{LABEL_KEY_MESSAGE}; got {', '.join(repr(k) for k in bad)}")
        return labels


class Monitoring(ApiModel):
    """How Prometheus finds this server's metrics."""

    pod_monitor: PodMonitorSettings | None = Field(
        default=None, description="The PodMonitor of the pods; unset: the operator's settings."
    )
