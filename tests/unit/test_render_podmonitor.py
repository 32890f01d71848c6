"""A TritonServer's PodMonitor: which settings win (operator default, then the server's spec), the manifest,
the operator's environment, and the spec's validation of bad values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.render.podmonitor import (
    PodMonitorDefaults,
    WantedPodMonitor,
    pod_monitor_defaults,
    render_pod_monitor,
    wanted_pod_monitor,
)
from triton_operator.render.server import render_deployment

pytestmark = pytest.mark.unit

ON = PodMonitorDefaults(enabled=True, labels={"release": "kps"}, interval="30s")
OFF = PodMonitorDefaults()


def spec(monitoring: dict[str, Any] | None = None, metrics: bool = True) -> TritonServerSpec:
    body: dict[str, Any] = {"triton": {"metrics": {"enabled": metrics}}}
    if monitoring is not None:
        body["monitoring"] = monitoring
    return TritonServerSpec.model_validate(body)


@pytest.mark.parametrize(
    ("server", "defaults", "expected"),
    [
        (spec(), OFF, None),
        (spec(), ON, WantedPodMonitor({"release": "kps"}, "30s")),
        (spec({"podMonitor": {"enabled": False}}), ON, None),
        (spec({"podMonitor": {"enabled": True}}), OFF, WantedPodMonitor({}, "30s")),
        (spec({"podMonitor": {"interval": "10s"}}), ON, WantedPodMonitor({"release": "kps"}, "10s")),
        (spec({"podMonitor": {"interval": "10s"}}), OFF, None),
        (
            spec({"podMonitor": {"labels": {"release": "other", "team": "ml"}}}),
            ON,
            WantedPodMonitor({"release": "other", "team": "ml"}, "30s"),
        ),
        (spec({"podMonitor": {}}), ON, WantedPodMonitor({"release": "kps"}, "30s")),
        (spec({}), ON, WantedPodMonitor({"release": "kps"}, "30s")),
        (spec(metrics=False), ON, None),
        (spec({"podMonitor": {"enabled": True}}, metrics=False), OFF, None),
    ],
    ids=[
        "off-by-default",
        "on-for-all",
        "server-opts-out",
        "server-opts-in",
        "server-interval",
        "interval-alone-does-not-opt-in",
        "server-labels-over-defaults",
        "empty-podmonitor-follows-operator",
        "empty-monitoring-follows-operator",
        "no-metrics-port-no-monitor",
        "opt-in-without-metrics-port",
    ],
)
def test_which_settings_win(
    server: TritonServerSpec, defaults: PodMonitorDefaults, expected: WantedPodMonitor | None
) -> None:
    assert wanted_pod_monitor(server, defaults) == expected


def test_manifest_selects_the_servers_pods_on_the_metrics_port_and_names_the_server() -> None:
    manifest = render_pod_monitor("pool", "serving", "uid-1", WantedPodMonitor({"release": "kps"}, "15s"))
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PodMonitor"
    assert manifest["metadata"]["name"] == "pool" and manifest["metadata"]["namespace"] == "serving"
    assert manifest["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = manifest["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    assert endpoint["relabelings"] == [
        {"action": "replace", "targetLabel": "tritonserver", "replacement": "pool"}
    ]
    # The selector picks exactly the pods the Deployment makes, and their container names the port.
    deployment = render_deployment("pool", "serving", spec(), owner_labels={})
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert manifest["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = [
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
    ]
    assert "metrics" in ports


def test_a_user_label_cannot_replace_the_operators() -> None:
    manifest = render_pod_monitor(
        "pool", "serving", "uid-1", WantedPodMonitor({"app.kubernetes.io/managed-by": "me"}, "30s")
    )
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "triton-operator"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, PodMonitorDefaults(False, {}, "30s")),
        (
            {
                "TRITON_OPERATOR_POD_MONITOR": "true",
                "TRITON_OPERATOR_POD_MONITOR_LABELS": '{"release": "kps"}',
                "TRITON_OPERATOR_POD_MONITOR_INTERVAL": "1m",
            },
            PodMonitorDefaults(True, {"release": "kps"}, "1m"),
        ),
        (
            {"TRITON_OPERATOR_POD_MONITOR": "False", "TRITON_OPERATOR_POD_MONITOR_LABELS": ""},
            PodMonitorDefaults(),
        ),
    ],
    ids=["unset", "chart-values", "case-and-empty"],
)
def test_operator_setting_from_env(env: dict[str, str], expected: PodMonitorDefaults) -> None:
    assert pod_monitor_defaults(env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRITON_OPERATOR_POD_MONITOR": "yes"}, "TRITON_OPERATOR_POD_MONITOR must be true or false"),
        (
            {"TRITON_OPERATOR_POD_MONITOR_LABELS": "release=kps"},
            "TRITON_OPERATOR_POD_MONITOR_LABELS must be a JSON",
        ),
        ({"TRITON_OPERATOR_POD_MONITOR_LABELS": '{"a": 1}'}, "string values"),
        ({"TRITON_OPERATOR_POD_MONITOR_INTERVAL": "banana"}, "TRITON_OPERATOR_POD_MONITOR_INTERVAL must be"),
    ],
    ids=["enabled", "labels-not-json", "labels-not-strings", "interval"],
)
def test_bad_operator_setting_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        pod_monitor_defaults(env)


@pytest.mark.parametrize(
    ("pod_monitor", "field"),
    [
        ({"interval": "banana"}, "monitoring.podMonitor.interval"),
        ({"interval": "30"}, "monitoring.podMonitor.interval"),
        ({"labels": {"release": "x" * 64}}, "monitoring.podMonitor.labels.release"),
        ({"labels": {"k" * 64: "v"}}, "monitoring.podMonitor.labels"),
        ({"labels": {"bad key": "v"}}, "monitoring.podMonitor.labels"),
    ],
    ids=["banana", "no-unit", "value-over-63", "name-over-63", "space-in-name"],
)
def test_bad_spec_values_are_refused_naming_the_field(pod_monitor: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TritonServerSpec.model_validate({"monitoring": {"podMonitor": pod_monitor}})
    paths = {".".join(str(p) for p in err["loc"]) for err in info.value.errors()}
    assert any(path.startswith(field) for path in paths), paths


@pytest.mark.parametrize(
    "labels",
    [{"release": "kube-prometheus-stack"}, {"example.com/team": "ml", "a": ""}, {"k" * 63: "v" * 63}],
    ids=["release", "prefixed-and-empty", "at-the-limits"],
)
def test_good_labels_pass(labels: dict[str, str]) -> None:
    parsed = TritonServerSpec.model_validate({"monitoring": {"podMonitor": {"labels": labels}}})
    assert parsed.monitoring is not None and parsed.monitoring.pod_monitor is not None
    assert parsed.monitoring.pod_monitor.labels == labels
