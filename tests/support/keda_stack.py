"""The sandbox's real autoscaling path as tests use it: Prometheus (sandbox/monitoring.py), KEDA's operator
and metrics apiserver (sandbox/keda.py) and kube-controller-manager's HPA controller; plus a gauge exporter
pod whose value a test sets over HTTP, so a ScaledObject's Prometheus query reads a real scraped series."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

from sandbox import keda, monitoring, netns
from tests.e2e.conftest import Sandbox
from tests.support import monitoring_stack

OPERATOR_IMAGE = "ghcr.io/tritonoperator/triton-operator:0.1.0"  # the pod runner runs this repo's python
EXPORTER = "load-exporter"
EXPORTER_PORT = 9100
METRIC = "e2e_queue_depth"
# Started with no series: the value a test sets is `PUT /value` (a number, or `absent` to stop exposing it).
EXPORTER_PY = f"""
import http.server, os
state = {{"value": None}}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        v = state["value"]
        body = "" if v is None else "# TYPE {METRIC} gauge\\n{METRIC} " + v + "\\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body.encode())
    def do_PUT(self):
        text = self.rfile.read(int(self.headers["Content-Length"])).decode().strip()
        state["value"] = None if text == "absent" else str(float(text))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], {EXPORTER_PORT}), Handler).serve_forever()
"""


def start(sb: Sandbox) -> str:
    """Prometheus and KEDA up (built first if need be); returns Prometheus's URL."""
    kubectl = str(sb.bin_dir / "kubectl")
    # The module proxy is outside the sandbox's network namespace: builds run there.
    monitoring_bins = netns.call_in_host(monitoring.ensure_binaries, timeout_s=1800)
    keda_bins = netns.call_in_host(keda.ensure_binaries, timeout_s=1800)
    url = monitoring.up(sb.cfg, sb.cfg.kubeconfig, kubectl=kubectl, bins=monitoring_bins)
    keda.up(sb.cfg, sb.cfg.kubeconfig, kubectl=kubectl, bins=keda_bins)
    return url


def stop(sb: Sandbox) -> None:
    """KEDA (its ScaledObjects first), then Prometheus and the Prometheus Operator's CRDs."""
    keda.stop(sb.cfg, str(sb.bin_dir / "kubectl"), sb.cfg.kubeconfig)
    monitoring_stack.stop(sb)


def exporter_objects() -> list[dict[str, Any]]:
    """The exporter pod and the PodMonitor that has Prometheus scrape it every scrape interval."""
    labels = {"app": EXPORTER}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": EXPORTER, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "exporter",
                    "image": OPERATOR_IMAGE,
                    "command": ["python", "-c", EXPORTER_PY],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/metrics", "port": "metrics"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": EXPORTER, "labels": dict(monitoring.SELECTOR_LABELS)},
        "spec": {
            "selector": {"matchLabels": labels},
            "podMetricsEndpoints": [{"port": "metrics", "interval": f"{monitoring.SCRAPE_INTERVAL_S}s"}],
        },
    }
    return [pod, monitor]


def set_value(sb: Sandbox, ns: str, value: float | None) -> None:
    """The exporter's gauge (None: not exposed, so the series goes stale at the next scrape)."""
    pod = client.CoreV1Api(sb.api).read_namespaced_pod(EXPORTER, ns)
    body = b"absent" if value is None else str(value).encode()
    req = urllib.request.Request(f"http://{pod.status.pod_ip}:{EXPORTER_PORT}/value", data=body, method="PUT")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204, resp.status


def get(sb: Sandbox, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object as `kubectl get -o json` shows it, or None while there is none."""
    proc = sb.kubectl("get", "-n", ns, kind, name, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def hpa(sb: Sandbox, ns: str, name: str) -> dict[str, Any] | None:
    return get(sb, ns, "horizontalpodautoscaler.autoscaling", name)


def scaled_object(sb: Sandbox, ns: str, name: str) -> dict[str, Any] | None:
    return get(sb, ns, "scaledobject.keda.sh", name)


def hpa_view(found: dict[str, Any] | None) -> tuple[int, float | None, str]:
    """An HPA's (desiredReplicas, its external metric's current average value, ScalingActive's reason)."""
    status = (found or {}).get("status") or {}
    average: float | None = None
    for metric in status.get("currentMetrics") or []:
        current = (metric.get("external") or {}).get("current") or {}
        if "averageValue" in current:
            average = float(parse_quantity(current["averageValue"]))
    return (
        int(status.get("desiredReplicas") or 0),
        average,
        str(condition(found, "ScalingActive").get("reason")),
    )


def pod_ready(sb: Sandbox, ns: str, name: str) -> bool:
    try:
        pod = client.CoreV1Api(sb.api).read_namespaced_pod(name, ns)
    except client.ApiException:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def replicas(sb: Sandbox, ns: str, name: str) -> tuple[int, int]:
    """A Deployment's (spec.replicas, status.readyReplicas)."""
    dep = client.AppsV1Api(sb.api).read_namespaced_deployment(name, ns)
    return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)


def wait_until(check: Any, timeout_s: float, what: str, period_s: float = 0.5) -> Any:
    return monitoring_stack.wait_until(check, timeout_s, what, period_s)


def elapsed(since: float) -> float:
    return time.monotonic() - since
