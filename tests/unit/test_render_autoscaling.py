"""The KEDA ScaledObject of a TritonServer with spec.autoscaling: the whole manifest, the signal's PromQL
(each request once on a multi-model pod, every model counted, an empty answer left empty), the Prometheus
default from the operator's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from triton_operator.api.autoscaling import Autoscaling, AutoscalingMetric
from triton_operator.render.autoscaling import (
    PROMETHEUS_ADDRESS_ENV,
    duration_seconds,
    metric_type,
    prometheus_address_default,
    rate_window,
    render_scaled_object,
    signal_query,
)

from tests.support.promtool import promtool

pytestmark = pytest.mark.unit

OWNER = {"app.kubernetes.io/instance": "pool", "tritonoperator.dev/server-uid": "uid-1"}
PROM = "http://prometheus-operated.monitoring:9090"
SEL = '{namespace="serving",tritonserver="pool"}'
VERSIONS = '{namespace="serving",tritonserver="pool",model=~".+~versions"}'
PENDING_SERIES = f"nv_inference_pending_request_count{SEL}"
ROUTERS = (
    f"label_replace(group by (pod, model) (nv_inference_request_success{VERSIONS}), "
    '"model", "$1", "model", "(.+)~versions")'
)


def _autoscaling(**fields: Any) -> Autoscaling:
    return Autoscaling.model_validate({"maxReplicas": 4, "target": {"value": 2}, **fields})


def test_the_whole_scaled_object_for_the_default_metric() -> None:
    manifest = render_scaled_object(
        "pool",
        "serving",
        _autoscaling(minReplicas=2, scaleDownStabilizationSeconds=120),
        prometheus_address=PROM,
        scrape_interval="30s",
        owner_labels=OWNER,
    )
    assert manifest == {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "pool", "namespace": "serving", "labels": OWNER},
        "spec": {
            # The Deployment, never the TritonServer: nothing the user's Git holds changes.
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "pool"},
            "minReplicaCount": 2,
            "maxReplicaCount": 4,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "name": "keda-hpa-pool",
                    "behavior": {
                        "scaleUp": {"stabilizationWindowSeconds": 0},
                        "scaleDown": {"stabilizationWindowSeconds": 120},
                    },
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "pendingRequestsPerReplica",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": PROM,
                        "query": f"sum({PENDING_SERIES} unless on (pod, model) {ROUTERS})",
                        "threshold": "2",
                        "ignoreNullValues": "false",
                    },
                }
            ],
        },
    }


def test_queue_time_sums_before_dividing_over_four_scrapes() -> None:
    query = signal_query("serving", "pool", AutoscalingMetric.QUEUE_TIME_PER_REQUEST, rate_window("15s"))
    queued = f"rate(nv_inference_queue_duration_us{SEL}[60s]) unless on (pod, model) {ROUTERS}"
    served = f"rate(nv_inference_request_success{SEL}[60s]) unless on (pod, model) {ROUTERS}"
    assert query == f"sum({queued}) / clamp_min(sum({served}), 1e-9)"


@pytest.mark.parametrize(
    ("metric", "kind"),
    [
        # A pool's total divided by its pods: the HPA wants ceil(total / target) replicas.
        (AutoscalingMetric.PENDING_REQUESTS_PER_REPLICA, "AverageValue"),
        # A mean already: the HPA scales the pods by value / target.
        (AutoscalingMetric.QUEUE_TIME_PER_REQUEST, "Value"),
    ],
)
def test_metric_type_per_signal(metric: AutoscalingMetric, kind: str) -> None:
    assert metric_type(metric) == kind


@pytest.mark.parametrize(
    ("interval", "seconds", "window"),
    [
        ("30s", 30, "120s"),
        ("1m30s", 90, "360s"),
        ("2s", 2, "8s"),
        ("500ms", 0.5, "2s"),
        ("1h", 3600, "14400s"),
    ],
)
def test_rate_window_is_four_scrapes(interval: str, seconds: float, window: str) -> None:
    assert duration_seconds(interval) == seconds
    assert rate_window(interval) == window


@pytest.mark.parametrize(
    ("env", "address"),
    [({}, None), ({PROMETHEUS_ADDRESS_ENV: ""}, None), ({PROMETHEUS_ADDRESS_ENV: f" {PROM} "}, PROM)],
)
def test_prometheus_address_default(env: dict[str, str], address: str | None) -> None:
    assert prometheus_address_default(env) == address


def test_a_bad_prometheus_address_names_the_variable() -> None:
    with pytest.raises(ValueError, match=f"{PROMETHEUS_ADDRESS_ENV} must be an http"):
        prometheus_address_default({PROMETHEUS_ADDRESS_ENV: "prometheus:9090"})


# --- the signal on Triton's series, evaluated by Prometheus's own engine (promtool test rules) ---------


def _series(metric: str, pod: str, model: str, values: str) -> dict[str, str]:
    labels = f'namespace="serving",tritonserver="pool",pod="{pod}",model="{model}",version="1"'
    return {"series": f"{metric}{{{labels}}}", "values": values}


def _check(tmp_path: Path, query: str, series: list[dict[str, str]], at: str, expected: float | None) -> None:
    (tmp_path / "none.yaml").write_text("groups: []\n")
    test = {
        "interval": "15s",
        "input_series": series,
        "promql_expr_test": [
            {
                "expr": query,
                "eval_time": at,
                "exp_samples": [] if expected is None else [{"labels": "{}", "value": expected}],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["none.yaml"], "tests": [test]}))
    done = promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


PENDING = signal_query("serving", "pool", AutoscalingMetric.PENDING_REQUESTS_PER_REPLICA, rate_window("15s"))
QUEUE = signal_query("serving", "pool", AutoscalingMetric.QUEUE_TIME_PER_REQUEST, rate_window("15s"))
P, S, Q = (
    "nv_inference_pending_request_count",
    "nv_inference_request_success",
    "nv_inference_queue_duration_us",
)


@pytest.mark.parametrize(
    ("series", "signal"),
    [
        pytest.param(
            [
                _series(P, "a", "mnist", "3x8"),
                _series(P, "a", "bert", "2x8"),
                _series(P, "b", "mnist", "1x8"),
            ],
            6,
            id="every-model-of-every-pod",
        ),
        pytest.param(
            [
                _series(P, "a", "llm", "4x8"),
                _series(P, "a", "llm~versions", "4x8"),
                _series(S, "a", "llm~versions", "0+10x8"),
                _series(P, "a", "mnist", "1x8"),
            ],
            5,
            id="a-routed-model-once",
        ),
        pytest.param(
            [
                _series(P, "a", "llm", "4x8"),
                _series(P, "a", "llm~versions", "4x8"),
                _series(S, "a", "llm~versions", "0+10x8"),
                _series(P, "b", "llm", "2x8"),
            ],
            6,
            id="a-router-known-on-its-own-pod-only",
        ),
        pytest.param([_series(P, "a", "mnist", "0x8")], 0, id="idle-is-0"),
        pytest.param([_series(P, "a", "mnist", "3 3 3 3 stale")], None, id="scrape-gap-is-no-answer"),
    ],
)
def test_pending_counts_each_request_once(
    tmp_path: Path, series: list[dict[str, str]], signal: float | None
) -> None:
    _check(tmp_path, PENDING, series, "1m30s", signal)


@pytest.mark.parametrize(
    ("series", "signal"),
    [
        pytest.param(
            # 10 requests a scrape queued 500 us each on mnist, 10 queued 1500 us on llm's versions; the
            # router's own queue time (9999 us each) is the same requests again: left out.
            [
                _series(S, "a", "mnist", "0+10x8"),
                _series(Q, "a", "mnist", "0+5000x8"),
                _series(S, "a", "llm", "0+10x8"),
                _series(Q, "a", "llm", "0+99990x8"),
                _series(S, "a", "llm~versions", "0+10x8"),
                _series(Q, "a", "llm~versions", "0+15000x8"),
            ],
            1000,
            id="summed-then-divided-routed-once",
        ),
        pytest.param(
            [_series(S, "a", "mnist", "100x8"), _series(Q, "a", "mnist", "5000x8")], 0, id="idle-is-0-not-nan"
        ),
        pytest.param(
            [_series(S, "a", "mnist", "0 10 20 stale"), _series(Q, "a", "mnist", "0 5000 10000 stale")],
            None,
            id="scrape-gap-is-no-answer",
        ),
    ],
)
def test_queue_time_per_request(tmp_path: Path, series: list[dict[str, str]], signal: float | None) -> None:
    _check(tmp_path, QUEUE, series, "1m30s", signal)
