"""The KEDA ScaledObject (keda.sh/v1alpha1) of a TritonServer with spec.autoscaling.

Pure: the operator's Prometheus default, the PromQL signal and the manifest. KEDA makes an HPA from the
ScaledObject (`keda-hpa-<name>`) whose target is the server's Deployment, never the TritonServer: the
autoscaler then writes nothing the user's Git holds, and Argo CD stays Synced with no ignoreDifferences.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from triton_operator.api.autoscaling import Autoscaling, AutoscalingMetric
from triton_operator.api.tritonmodel import ROUTED_SUFFIX
from triton_operator.render.podmonitor import SERVER_LABEL
from triton_operator.render.server import deployment_name

SCALED_OBJECT_API_VERSION = "keda.sh/v1alpha1"
SCALED_OBJECT_KIND = "ScaledObject"
SCALED_OBJECTS = "scaledobjects"
# The operator's setting, from its environment (the chart sets it from autoscaling.prometheusAddress).
PROMETHEUS_ADDRESS_ENV = "TRITON_OPERATOR_PROMETHEUS_ADDRESS"
ADDRESS_PATTERN = re.compile(r"^https?://[^\s/]+(/\S*)?$")
# A rate needs at least two samples in its window; four scrapes leave room for one missed (DESIGN.md).
SCRAPES_PER_WINDOW = 4
_DURATION_PART = re.compile(r"([0-9]+)(ms|y|w|d|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def prometheus_address_default(env: Mapping[str, str]) -> str | None:
    """The operator's Prometheus address from its environment, None when unset; ValueError naming the fix."""
    address = (env.get(PROMETHEUS_ADDRESS_ENV) or "").strip()
    if not address:
        return None
    if not ADDRESS_PATTERN.match(address):
        raise ValueError(
            f"{PROMETHEUS_ADDRESS_ENV} must be an http(s) URL such as "
            f"http://prometheus-operated.monitoring:9090, not {address!r}"
        )
    return address


def hpa_name(name: str) -> str:
    """The HPA KEDA makes for the server's ScaledObject (named here, not left to KEDA's default)."""
    return f"keda-hpa-{name}"


def duration_seconds(duration: str) -> float:
    """A Prometheus duration (30s, 1m30s, 500ms) in seconds."""
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(duration))


def rate_window(scrape_interval: str) -> str:
    """The window of the queue-time rates: four scrapes of the pods, in whole seconds."""
    return f"{max(1, round(SCRAPES_PER_WINDOW * duration_seconds(scrape_interval)))}s"


def _selector(namespace: str, server: str, model: str | None = None) -> str:
    model_part = f',model=~"{model}"' if model else ""
    return f'{{namespace="{namespace}",{SERVER_LABEL}="{server}"{model_part}}}'


def _without_routers(series: str, namespace: str, server: str) -> str:
    """`series` less the routers: a routed model is two models in Triton, the router `<name>` and its
    versions `<name>~versions`, each forwarded request counted by both. A router is known by its
    `~versions` sibling on the same pod (as in the chart's recording rules)."""
    versions = _selector(namespace, server, ".+" + ROUTED_SUFFIX)
    routers = (
        f"label_replace(group by (pod, model) (nv_inference_request_success{versions}), "
        f'"model", "$1", "model", "(.+){ROUTED_SUFFIX}")'
    )
    return f"{series} unless on (pod, model) {routers}"


def signal_query(namespace: str, server: str, metric: AutoscalingMetric, window: str) -> str:
    """The PromQL the HPA scales on: every model of every pod of the server, a routed model once.

    pendingRequestsPerReplica: the pool's pending requests (a gauge, live); the HPA divides by the pods
    (AverageValue). queueTimePerRequest: microseconds queued per successful request over `window`,
    numerator and denominator summed over the pool before dividing (an average of per-model ratios
    would weigh an idle model like a busy one); an idle pool reads 0, not NaN.
    An empty result (Prometheus has no live series: a scrape gap) stays empty, never 0: KEDA reports it
    as an error (ignoreNullValues false) and the HPA keeps its count rather than scaling down.
    """
    sel = _selector(namespace, server)
    if metric == AutoscalingMetric.PENDING_REQUESTS_PER_REPLICA:
        return f"sum({_without_routers(f'nv_inference_pending_request_count{sel}', namespace, server)})"
    queued = _without_routers(f"rate(nv_inference_queue_duration_us{sel}[{window}])", namespace, server)
    served = _without_routers(f"rate(nv_inference_request_success{sel}[{window}])", namespace, server)
    return f"sum({queued}) / clamp_min(sum({served}), 1e-9)"


def metric_type(metric: AutoscalingMetric) -> str:
    """How the HPA compares: a pool total divided by its pods (AverageValue), or a mean as is (Value)."""
    return "AverageValue" if metric == AutoscalingMetric.PENDING_REQUESTS_PER_REPLICA else "Value"


def render_scaled_object(
    name: str,
    namespace: str,
    autoscaling: Autoscaling,
    *,
    prometheus_address: str,
    scrape_interval: str,
    owner_labels: Mapping[str, str],
) -> dict[str, Any]:
    """The ScaledObject named like the server, scaling its Deployment between min and max replicas."""
    target = autoscaling.target
    window = rate_window(scrape_interval)
    return {
        "apiVersion": SCALED_OBJECT_API_VERSION,
        "kind": SCALED_OBJECT_KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(owner_labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(name)},
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "name": hpa_name(name),
                    "behavior": {
                        "scaleUp": {"stabilizationWindowSeconds": autoscaling.scale_up_stabilization_seconds},
                        "scaleDown": {
                            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds
                        },
                    },
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "name": target.metric.value,
                    "metricType": metric_type(target.metric),
                    "metadata": {
                        "serverAddress": prometheus_address,
                        "query": signal_query(namespace, name, target.metric, window),
                        "threshold": str(target.value),
                        # An empty answer is an error, not 0: the HPA holds its count through a scrape gap.
                        "ignoreNullValues": "false",
                    },
                }
            ],
        },
    }
