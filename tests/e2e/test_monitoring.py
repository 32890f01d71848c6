"""Issue 20: a TritonServer's PodMonitor on a real API server and real Triton pods, without the Prometheus
Operator's CRDs (the sandbox's default) and with its real PodMonitor CRD (v0.85.0) installed; and the
monitoring settings refused at admission, naming the field."""

from __future__ import annotations

import time
import urllib.request
from typing import Any, cast

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Operator, Sandbox
from tests.support.objects import get_cr
from tests.support.prometheus_crds import crd_path

GROUP, VERSION, PLURAL = "tritonoperator.dev", "v1alpha1", "tritonservers"
POD_MONITOR_CRD = "podmonitors.monitoring.coreos.com"


def server_yaml(name: str, monitoring: str) -> str:
    return f"""
apiVersion: tritonoperator.dev/v1alpha1
kind: TritonServer
metadata:
  name: {name}
spec:
  replicas: 1
  resources:
    gpus: 1
  monitoring:
{monitoring}
"""


WATCHED = """    podMonitor:
      enabled: true
      labels: {release: kube-prometheus-stack}
      interval: 15s
"""


def server(sb: Sandbox, ns: str, name: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(sb.api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return cast(dict[str, Any], obj)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), {})


def wait_condition(sb: Sandbox, ns: str, name: str, ctype: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition(server(sb, ns, name), ctype)
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{ns}/{name} never had a {ctype} condition: {server(sb, ns, name).get('status')}")


def events(sb: Sandbox, ns: str, name: str, reason: str) -> list[Any]:
    items = client.CoreV1Api(sb.api).list_namespaced_event(ns).items
    return [
        e
        for e in items
        if e.involved_object.kind == "TritonServer" and e.involved_object.name == name and e.reason == reason
    ]


def operator_samples(operator: Operator) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The operator's /metrics as {(sample name, labels): value}."""
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def pod_monitor(sb: Sandbox, ns: str, name: str) -> dict[str, Any] | None:
    return get_cr(sb, ns, "podmonitors", name, group_version=("monitoring.coreos.com", "v1"))


@pytest.mark.alone  # installs and removes a cluster-wide CRD
def test_pod_monitor_kind_missing_then_installed(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    served = sandbox.kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o", "name").stdout
    assert "podmonitors" not in served, "the sandbox has no Prometheus Operator CRDs by default"

    # Without the kind: the server is Ready, Monitored says why, one Normal Event says it once.
    sandbox.kubectl("apply", "-n", namespace, "-f", "-", input=server_yaml("plain", WATCHED))
    sandbox.kubectl("wait", "-n", namespace, "tritonserver/plain", "--for=condition=Ready", "--timeout=150s")
    monitored = wait_condition(sandbox, namespace, "plain", "Monitored")
    assert (monitored["status"], monitored["reason"]) == ("False", "PodMonitorKindMissing")
    assert "does not serve monitoring.coreos.com/v1 PodMonitor" in monitored["message"]
    time.sleep(25)  # more status passes (10 s each) say nothing new
    said = events(sandbox, namespace, "plain", "PodMonitorKindMissing")
    assert [(e.type, e.count or 1) for e in said] == [("Normal", 1)], said
    assert condition(server(sandbox, namespace, "plain"), "Ready")["status"] == "True"

    # The operator's own gauges (what the alerts on CR state read) describe the server.
    samples = operator_samples(operator)
    own = {"namespace": namespace, "tritonserver": "plain"}
    assert samples.get(("triton_operator_tritonserver_spec_replicas", frozenset(own.items()))) == 1
    assert samples.get(("triton_operator_tritonserver_status_ready_replicas", frozenset(own.items()))) == 1
    missing = {**own, "type": "Monitored", "status": "False", "reason": "PodMonitorKindMissing"}
    assert samples.get(("triton_operator_tritonserver_condition", frozenset(missing.items()))) == 1
    passed = {"namespace": namespace, "kind": "TritonServer", "name": "plain"}
    last_pass = samples.get(("triton_operator_object_last_pass_timestamp_seconds", frozenset(passed.items())))
    assert last_pass is not None and time.time() - last_pass < 60
    assert any(name == "triton_operator_build_info" for name, _ in samples)

    # With the Prometheus Operator's own PodMonitor CRD: the PodMonitor selects the pods on `metrics`.
    sandbox.kubectl("apply", "--server-side", "-f", str(crd_path("podmonitors")))
    try:
        sandbox.kubectl("wait", "--for=condition=Established", f"crd/{POD_MONITOR_CRD}", "--timeout=60s")
        sandbox.kubectl("apply", "-n", namespace, "-f", "-", input=server_yaml("watched", WATCHED))
        sandbox.kubectl(
            "wait", "-n", namespace, "tritonserver/watched", "--for=condition=Ready", "--timeout=150s"
        )
        monitored = wait_condition(sandbox, namespace, "watched", "Monitored")
        assert (monitored["status"], monitored["reason"]) == ("True", "PodMonitorApplied"), monitored
        found = pod_monitor(sandbox, namespace, "watched")
        assert found is not None
        assert found["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert found["metadata"]["ownerReferences"][0]["name"] == "watched"
        (endpoint,) = found["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["interval"]) == ("metrics", "15s")
        assert {"targetLabel": "tritonserver", "replacement": "watched"}.items() <= endpoint["relabelings"][
            0
        ].items()
        # The selector picks exactly the server's pods, and their container names the port.
        selector = ",".join(f"{k}={v}" for k, v in found["spec"]["selector"]["matchLabels"].items())
        pods = client.CoreV1Api(sandbox.api).list_namespaced_pod(namespace, label_selector=selector).items
        assert {p.metadata.labels["app.kubernetes.io/instance"] for p in pods} == {"watched"}
        ports = {port.name for p in pods for c in p.spec.containers for port in c.ports or []}
        assert "metrics" in ports
        assert events(sandbox, namespace, "watched", "PodMonitorKindMissing") == []
        # Opting out removes it.
        off = WATCHED.replace("enabled: true", "enabled: false")
        sandbox.kubectl("apply", "-n", namespace, "-f", "-", input=server_yaml("watched", off))
        deadline = time.monotonic() + 60
        while pod_monitor(sandbox, namespace, "watched") is not None and time.monotonic() < deadline:
            time.sleep(1)
        assert pod_monitor(sandbox, namespace, "watched") is None
    finally:
        sandbox.kubectl("delete", "crd", POD_MONITOR_CRD, "--wait=true", "--timeout=60s", check=False)


@pytest.mark.parametrize(
    ("monitoring", "field"),
    [
        ("    podMonitor:\n      interval: banana\n", "spec.monitoring.podMonitor.interval"),
        (
            f"    podMonitor:\n      labels: {{release: {'x' * 64}}}\n",
            "spec.monitoring.podMonitor.labels.release",
        ),
    ],
    ids=["interval-banana", "label-over-63"],
)
def test_bad_monitoring_settings_are_refused_at_admission(
    sandbox: Sandbox, operator: Operator, namespace: str, monitoring: str, field: str
) -> None:
    done = sandbox.kubectl(
        "apply", "-n", namespace, "-f", "-", input=server_yaml("refused", monitoring), check=False
    )
    assert done.returncode != 0
    assert field in done.stderr, done.stderr
