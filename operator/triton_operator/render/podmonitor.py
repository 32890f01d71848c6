"""The PodMonitor (monitoring.coreos.com/v1) of a TritonServer: Prometheus scrapes each pod's `metrics` port.

Pure: which settings apply (the operator's defaults, then the server's spec.monitoring.podMonitor) and the
manifest they give. The reconciler applies it only where the API server serves the kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from triton_operator.api.monitoring import DURATION_PATTERN
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.render.labels import owner_labels, selector_labels

POD_MONITOR_API_VERSION = "monitoring.coreos.com/v1"
POD_MONITOR_KIND = "PodMonitor"
# The label every scraped series gets, with the TritonServer's name: the recording rules and alerts
# (charts/triton-operator/files/prometheus-rules.yaml) aggregate per server by it.
SERVER_LABEL = "tritonserver"
DEFAULT_INTERVAL = "30s"
# The operator's setting, from its environment (the chart sets them from metrics.podMonitor).
ENABLED_ENV = "TRITON_OPERATOR_POD_MONITOR"
LABELS_ENV = "TRITON_OPERATOR_POD_MONITOR_LABELS"
INTERVAL_ENV = "TRITON_OPERATOR_POD_MONITOR_INTERVAL"


@dataclass(frozen=True)
class PodMonitorDefaults:
    """The operator's own setting (the chart's metrics.podMonitor): on for every server, or not."""

    enabled: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    interval: str = DEFAULT_INTERVAL


@dataclass(frozen=True)
class WantedPodMonitor:
    """What one server's PodMonitor is to be: its extra labels and scrape interval."""

    labels: Mapping[str, str]
    interval: str


def pod_monitor_defaults(env: Mapping[str, str]) -> PodMonitorDefaults:
    """The operator's PodMonitor setting from its environment; ValueError naming the variable and the fix."""
    enabled = env.get(ENABLED_ENV, "false").strip().lower()
    if enabled not in ("true", "false"):
        raise ValueError(f"{ENABLED_ENV} must be true or false, not {enabled!r}")
    try:
        labels = json.loads(env.get(LABELS_ENV) or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{LABELS_ENV} must be a JSON object of label names to values: {exc}") from exc
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError(
            f'{LABELS_ENV} must be a JSON object of label names to string values, e.g. {{"release": "prom"}}'
        )
    interval = env.get(INTERVAL_ENV) or DEFAULT_INTERVAL
    if not re.match(DURATION_PATTERN, interval):
        raise ValueError(f"{INTERVAL_ENV} must be a Prometheus duration such as 30s or 1m, not {interval!r}")
    return PodMonitorDefaults(enabled=enabled == "true", labels=labels, interval=interval)


def wanted_pod_monitor(spec: TritonServerSpec, defaults: PodMonitorDefaults) -> WantedPodMonitor | None:
    """The server's PodMonitor, or None: off by the operator and not asked for, opted out, or no /metrics."""
    own = spec.monitoring.pod_monitor if spec.monitoring is not None else None
    enabled = own.enabled if own is not None and own.enabled is not None else defaults.enabled
    if not enabled or not spec.triton.metrics.enabled:
        return None
    labels = {**defaults.labels, **(own.labels if own is not None else {})}
    interval = (own.interval if own is not None else None) or defaults.interval
    return WantedPodMonitor(labels=labels, interval=interval)


def render_pod_monitor(name: str, namespace: str, uid: str, wanted: WantedPodMonitor) -> dict[str, Any]:
    """The PodMonitor named like the server, selecting exactly its pods."""
    return {
        "apiVersion": POD_MONITOR_API_VERSION,
        "kind": POD_MONITOR_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            # The operator's labels win: they tell its children apart (a user label cannot hide one).
            "labels": {**wanted.labels, **owner_labels(name, uid)},
        },
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": wanted.interval,
                    # Every series says which TritonServer it is from (namespace and pod come by default).
                    "relabelings": [{"action": "replace", "targetLabel": SERVER_LABEL, "replacement": name}],
                }
            ],
        },
    }
