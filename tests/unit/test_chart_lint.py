"""`helm lint` passes with the defaults and documented options; values.schema.json rejects bad values.

The helm helpers the chart tests share (`helm`, `render_chart`) live in tests/support/chart.py.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.chart import CHART, NAMESPACE, helm, set_args

pytestmark = pytest.mark.unit


def lint(*extra: str) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` of the chart with extra arguments."""
    return helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE, *extra)


def test_lint_passes_with_defaults() -> None:
    done = lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    "values",
    [
        {"watchNamespaces": "{serving,staging}"},
        {"replicaCount": "2"},
        {"leaderElection.enabled": "false", "leaderElection.leaseName": "ops-leader"},
        {"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.release": "prom"},
        {"serviceAccount.create": "false", "serviceAccount.name": "ops", "rbac.create": "false"},
        {"image.tag": "0.2.0-rc.1", "image.pullPolicy": "Always", "resources.limits.cpu": "1"},
        {"replicaCount": "0"},
        {
            "metrics.podMonitor.enabled": "true",
            "metrics.podMonitor.labels.release": "kube-prometheus-stack",
            "metrics.podMonitor.interval": "15s",
            "metrics.prometheusRule.enabled": "true",
            "metrics.prometheusRule.labels.release": "kube-prometheus-stack",
            "metrics.prometheusRule.alertFor.TritonModelFailureRatioHigh": "2m",
            "metrics.prometheusRule.alertFor.TritonOperatorDown": "1h30m",
            "metrics.grafanaDashboard.enabled": "true",
            "metrics.grafanaDashboard.namespace": "monitoring",
            "metrics.grafanaDashboard.annotations.grafana_folder": "Triton",
        },
    ],
    ids=[
        "namespaced",
        "standbys",
        "no-election",
        "servicemonitor",
        "bring-your-own-rbac",
        "image-and-limits",
        "paused",
        "monitoring",
    ],
)
def test_lint_passes_with_documented_options(values: dict[str, str]) -> None:
    done = lint(*set_args(values))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "two"}, "/replicaCount': got string, want integer"),
        ({"replicaCount": "-1"}, "/replicaCount': minimum"),
        (
            {"replicaCount": "2", "leaderElection.enabled": "false"},
            "/replicaCount': maximum: got 2, want 1",
        ),
        ({"replicaCount": "1", "replicas": "1"}, "additional properties 'replicas' not allowed"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy': value must be one of"),
        ({"image.registry": "quay.io"}, "additional properties 'registry' not allowed"),
        ({"resources.requests.cpu": "lots"}, "/resources/requests/cpu'"),
        ({"resources.request.cpu": "1"}, "additional properties 'request' not allowed"),
        ({"watchNamespaces": "{Serving}"}, "/watchNamespaces/0'"),
        ({"metrics.service.port": "70000"}, "/metrics/service/port': maximum"),
        ({"metrics.serviceMonitor.interval": "30 seconds"}, "/metrics/serviceMonitor/interval'"),
        (
            {"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"},
            "/metrics/service/enabled'",
        ),
        ({"leaderElection.enabled": "yes please"}, "/leaderElection/enabled': got string, want boolean"),
        ({"leaderElection.leaseName": "Bad_Name"}, "/leaderElection/leaseName'"),
        ({"peering.enabled": "true"}, "additional properties 'peering' not allowed"),
        ({"rbac.create": "true", "rbac.secrets": "true"}, "additional properties 'secrets' not allowed"),
        ({"metrics.podMonitor.interval": "banana"}, "/metrics/podMonitor/interval'"),
        ({"autoscaling.prometheusAddress": "prometheus:9090"}, "/autoscaling/prometheusAddress'"),
        ({"metrics.podMonitor.labels.release": "x" * 64}, "/metrics/podMonitor/labels/release'"),
        # helm's schema library names the key, under a wrong path; the key is what the user must fix.
        ({"metrics.podMonitor.labels." + "k" * 64: "v"}, "invalid propertyName '" + "k" * 64),
        ({"metrics.prometheusRule.enabled": "sometimes"}, "/metrics/prometheusRule/enabled'"),
        ({"metrics.prometheusRule.labels.release": "a b"}, "/metrics/prometheusRule/labels/release'"),
        (
            {"metrics.prometheusRule.alertFor.TritonOperatorDown": "banana"},
            "/metrics/prometheusRule/alertFor/TritonOperatorDown'",
        ),
        (
            {"metrics.prometheusRule.alertFor.TritonModelFailureRatioHigh": "5"},
            "/metrics/prometheusRule/alertFor/TritonModelFailureRatioHigh': got number, want string",
        ),
        (
            {"metrics.prometheusRule.alertFor.TritonOperatorGone": "1m"},
            "additional properties 'TritonOperatorGone' not allowed",
        ),
        ({"metrics.grafanaDashboard.enabled": "banana"}, "/metrics/grafanaDashboard/enabled'"),
        ({"metrics.grafanaDashboard.namespace": "Monitoring"}, "/metrics/grafanaDashboard/namespace'"),
        ({"metrics.grafanaDashboard.labels.team": "x" * 64}, "/metrics/grafanaDashboard/labels/team'"),
        ({"metrics.grafanaDashboard.folder": "Triton"}, "additional properties 'folder' not allowed"),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else "",
)
def test_lint_rejects_bad_values(values: dict[str, str], complaint: str) -> None:
    done = lint(*set_args(values))
    assert done.returncode != 0, f"helm lint accepted {values}"
    assert complaint in done.stdout + done.stderr
