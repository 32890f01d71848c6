"""The sandbox's Prometheus Operator and Prometheus (sandbox/monitoring.py) as tests use them: started with
the chart's ServiceMonitor and PrometheusRule rendered by `helm template` (their values turned on, labelled
as kube-prometheus-stack selects), read through Prometheus's HTTP API."""

from __future__ import annotations

import time
from typing import Any

import yaml
from kubernetes import client

from sandbox import monitoring, netns
from tests.e2e.conftest import Sandbox
from tests.support.chart import NAMESPACE as CHART_NAMESPACE
from tests.support.chart import RELEASE as CHART_RELEASE
from tests.support.chart import render_chart, set_args
from tests.support.objects import get_cr
from tests.support.prometheus_http import api

INTERVAL_S = monitoring.SCRAPE_INTERVAL_S
DISCOVERY_DELAY_S = monitoring.DISCOVERY_DELAY_S
RELEASE_LABEL = next(iter(monitoring.SELECTOR_LABELS.items()))
CRD_GROUP = "monitoring.coreos.com"
# The holds the tests give the alerts they watch (metrics.prometheusRule.alertFor), instead of minutes.
ALERT_FOR = {"TritonModelFailureRatioHigh": "10s", "TritonOperatorDown": "10s"}


def chart_monitoring_objects() -> list[dict[str, Any]]:
    """The chart's ServiceMonitor (the operator's /metrics) and PrometheusRule, as a user turns them on for
    kube-prometheus-stack, scraped every INTERVAL_S, the alerts of ALERT_FOR holding that long."""
    key, value = RELEASE_LABEL
    values = {
        "metrics.serviceMonitor.enabled": "true",
        f"metrics.serviceMonitor.labels.{key}": value,
        "metrics.serviceMonitor.interval": f"{INTERVAL_S}s",
        "metrics.serviceMonitor.scrapeTimeout": f"{INTERVAL_S}s",
        "metrics.prometheusRule.enabled": "true",
        f"metrics.prometheusRule.labels.{key}": value,
        **{f"metrics.prometheusRule.alertFor.{alert}": hold for alert, hold in ALERT_FOR.items()},
    }
    docs = render_chart(*set_args(values))
    return [d for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")]


def start(sb: Sandbox) -> str:
    """The Operator and Prometheus up, the chart's monitor and rules applied; returns Prometheus's URL."""
    bins = netns.call_in_host(monitoring.ensure_binaries, timeout_s=1800)  # the module proxy is outside
    url = monitoring.up(sb.cfg, sb.cfg.kubeconfig, kubectl=str(sb.bin_dir / "kubectl"), bins=bins)
    sb.kubectl(
        "apply", "-n", CHART_NAMESPACE, "-f", "-", input=yaml.safe_dump_all(chart_monitoring_objects())
    )
    return url


def stop(sb: Sandbox) -> None:
    """Everything `start` made goes, the Operator's CRDs too (the sandbox has none by default)."""
    kinds = ",".join(f"{d['kind'].lower()}s.{CRD_GROUP}" for d in chart_monitoring_objects())
    sb.kubectl("delete", "-n", CHART_NAMESPACE, kinds, "--all", "--ignore-not-found", check=False)
    monitoring.stop(sb.cfg, str(sb.bin_dir / "kubectl"), sb.cfg.kubeconfig)
    crds = sb.kubectl("get", "crd", "-o", "name").stdout.split()
    ours = [c for c in crds if c.endswith(f".{CRD_GROUP}")]
    if ours:
        sb.kubectl("delete", *ours, "--wait=true", "--timeout=120s", check=False)


def targets(prometheus: str) -> list[dict[str, Any]]:
    data: dict[str, Any] = api(prometheus, "/api/v1/targets", [("state", "active")])
    found: list[dict[str, Any]] = data["activeTargets"]
    return found


def pod_monitor_exists(sb: Sandbox, ns: str, name: str) -> bool:
    return get_cr(sb, ns, "podmonitors", name, group_version=(CRD_GROUP, "v1")) is not None


def pod_target_health(prometheus: str, ns: str) -> dict[str, str]:
    """pod name -> health of its target, for the pods of namespace `ns`."""
    return {
        t["labels"]["pod"]: t["health"]
        for t in targets(prometheus)
        if t["labels"].get("namespace") == ns and "pod" in t["labels"]
    }


def alerts(prometheus: str, name: str, **labels: str) -> list[dict[str, Any]]:
    """The pending and firing alerts `name` whose labels include `labels` (Prometheus's /api/v1/alerts)."""
    found: list[dict[str, Any]] = api(prometheus, "/api/v1/alerts", [])["alerts"]
    return [
        a
        for a in found
        if a["labels"].get("alertname") == name and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def alert_state(prometheus: str, name: str, **labels: str) -> str:
    """firing, pending or inactive (no such alert), as Prometheus's alerts page says."""
    states = {a["state"] for a in alerts(prometheus, name, **labels)}
    return "firing" if "firing" in states else "pending" if states else "inactive"


def operator_target_health(prometheus: str) -> list[str]:
    """The health of each target of the chart's ServiceMonitor (the operator's /metrics)."""
    return [
        t["health"]
        for t in targets(prometheus)
        if t["labels"].get("namespace") == CHART_NAMESPACE
        and t["scrapePool"].startswith(f"serviceMonitor/{CHART_NAMESPACE}/")
    ]


def operator_leading(sb: Sandbox) -> Any:
    """A check: one ready operator pod of the chart, holding the chart's Lease (it acts, a standby
    would not)."""

    def check() -> str | None:
        core = client.CoreV1Api(sb.api)
        selector = f"app.kubernetes.io/name=triton-operator,app.kubernetes.io/instance={CHART_RELEASE}"
        pods = [
            p.metadata.name
            for p in core.list_namespaced_pod(CHART_NAMESPACE, label_selector=selector).items
            if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        lease = client.CoordinationV1Api(sb.api).read_namespaced_lease(CHART_RELEASE, CHART_NAMESPACE)
        holder = str(lease.spec.holder_identity or "")
        return f"{pods} led by {holder!r}" if len(pods) == 1 and holder.startswith(pods[0]) else None

    return check


def wait_until(check: Any, timeout_s: float, what: str, period_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(period_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last seen: {last!r})")
