"""What the operator and the chart make for the Prometheus Operator is valid against its own CRDs (v0.85.0):
a TritonServer's PodMonitor, the chart's ServiceMonitor and PrometheusRule."""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from triton_operator.render.podmonitor import WantedPodMonitor, render_pod_monitor

from tests.support.chart import render_chart
from tests.support.prometheus_crds import crd_schema

pytestmark = pytest.mark.unit


def invalid(obj: dict[str, Any], plural: str) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema(plural))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_pod_monitor_matches_the_crd() -> None:
    manifest = render_pod_monitor("pool", "serving", "uid-1", WantedPodMonitor({"release": "kps"}, "15s"))
    assert invalid(manifest, "podmonitors") == []


def test_a_bad_pod_monitor_is_caught() -> None:
    """The check can fail: an interval the Prometheus Operator refuses."""
    manifest = render_pod_monitor("pool", "serving", "uid-1", WantedPodMonitor({}, "banana"))
    assert any("interval" in problem for problem in invalid(manifest, "podmonitors"))


def test_chart_monitors_and_rules_match_the_crds() -> None:
    objects = render_chart(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true"
    )
    by_kind = {obj["kind"]: obj for obj in objects}
    assert invalid(by_kind["ServiceMonitor"], "servicemonitors") == []
    assert invalid(by_kind["PrometheusRule"], "prometheusrules") == []
