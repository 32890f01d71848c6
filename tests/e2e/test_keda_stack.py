"""Issue 22's real autoscaling path in the sandbox: a real Prometheus 3.16 (sandbox/monitoring.py) scrapes a
gauge the test sets, KEDA v2.20.2 (sandbox/keda.py) serves it as an external metric through
kube-apiserver's aggregation layer, and kube-controller-manager's own HPA controller, on the HPA KEDA
makes from a ScaledObject, scales a plain Deployment: up when the value is high, back down after the
scale-down stabilization window when it is low, and, with `ignoreNullValues: "false"`, not at all while
the query returns nothing (KEDA's Prometheus scaler then answers an error, the HPA cannot compute a
replica count and keeps the one it has; with the default `true` KEDA reads an empty result as 0).

The HPA controller syncs every 15 s (kube-controller-manager's default, unchanged here), so each step
takes up to one sync plus the scrape and the window."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Sandbox
from tests.support import keda_stack as stack
from tests.support.objects import apply
from tests.support.prometheus_http import query

pytestmark = pytest.mark.e2e
WORKER = "worker"
SCALED_OBJECT = "worker"
HPA = f"keda-hpa-{SCALED_OBJECT}"
TARGET = 10  # per replica (the trigger's threshold, an AverageValue target)
MAX_REPLICAS = 5
HIGH = 35  # -> ceil(35 / 10) = 4 replicas
LOW = 5  # -> 1 replica
SCALE_DOWN_WINDOW_S = 20  # longer than a sync: a sync falls inside it
HPA_SYNC_S = 15  # kube-controller-manager's --horizontal-pod-autoscaler-sync-period default


@pytest.fixture(scope="module")
def prometheus(sandbox: Sandbox) -> Iterator[str]:
    """Prometheus and KEDA for this module; all of it (KEDA's and the Prometheus Operator's CRDs too) gone
    at its end."""
    started = time.monotonic()
    try:
        url = stack.start(sandbox)
        print(f"\nPrometheus + KEDA up in {time.monotonic() - started:.1f}s", flush=True)
        yield url
    finally:
        stack.stop(sandbox)


def worker() -> dict[str, Any]:
    """A plain Deployment of placeholder pods: what the HPA scales."""
    labels = {"app": WORKER}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WORKER},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }


def scaled_object(prometheus: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": SCALED_OBJECT},
        "spec": {
            "scaleTargetRef": {"name": WORKER},
            "minReplicaCount": 1,
            "maxReplicaCount": MAX_REPLICAS,
            "pollingInterval": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": MAX_REPLICAS, "periodSeconds": 5}],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S,
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
                        },
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus,
                        "query": f'sum({stack.METRIC}{{namespace="{ns}"}})',
                        "threshold": str(TARGET),
                        "ignoreNullValues": "false",
                    },
                }
            ],
        },
    }


def series(prometheus: str, ns: str) -> list[float]:
    return [float(s["value"][1]) for s in query(prometheus, f'{stack.METRIC}{{namespace="{ns}"}}')]


def replicas_when(sb: Sandbox, ns: str, want: int) -> Any:
    """A check: the Deployment asks for and has `want` ready replicas."""

    def check() -> tuple[int, int] | None:
        spec, ready = stack.replicas(sb, ns, WORKER)
        return (spec, ready) if spec == ready == want else None

    return check


def hpa_row(sb: Sandbox, ns: str, replicas: int) -> str | None:
    """`kubectl get hpa`'s table, once KEDA's HPA's row shows the Deployment, the metric against its target
    and `replicas` (NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE)."""
    shown = sb.kubectl("get", "hpa", "-n", ns).stdout
    row = next((line.split() for line in shown.splitlines() if line.startswith(f"{HPA} ")), [])
    wanted = (
        row[1:2] == [f"Deployment/{WORKER}"]
        and f"/{TARGET} (avg)" in " ".join(row)
        and row[-2] == str(replicas)
    )
    return shown if wanted else None


def scale_up(sb: Sandbox, ns: str) -> float:
    """HIGH against a target of TARGET per replica -> 4 replicas, within a sync of the HPA controller plus a
    scrape and the new pods' start; returns the seconds it took."""
    stack.set_value(sb, ns, HIGH)
    started = time.monotonic()
    stack.wait_until(replicas_when(sb, ns, 4), HPA_SYNC_S + 45, "the HPA scaling the worker to 4")
    return stack.elapsed(started)


@pytest.mark.alone  # installs KEDA's and the Prometheus Operator's CRDs and the external metrics APIService
def test_keda_hpa_scales_a_deployment_on_a_prometheus_series(
    sandbox: Sandbox, prometheus: str, namespace: str
) -> None:
    ns = namespace
    apply(sandbox, ns, *stack.exporter_objects())
    stack.wait_until(lambda: stack.pod_ready(sandbox, ns, stack.EXPORTER), 60, "the exporter Ready")
    stack.set_value(sandbox, ns, 0)
    stack.wait_until(lambda: series(prometheus, ns) == [0.0], 30, "Prometheus scraping the exporter's 0")
    apply(sandbox, ns, worker(), scaled_object(prometheus, ns))
    stack.wait_until(
        lambda: (
            stack.condition(stack.scaled_object(sandbox, ns, SCALED_OBJECT), "Ready").get("status") == "True"
        ),
        60,
        "the ScaledObject Ready",
    )
    stack.wait_until(
        lambda: stack.hpa_view(stack.hpa(sandbox, ns, HPA))[2] == "ValidMetricFound",
        HPA_SYNC_S + 30,
        "KEDA's HPA computing from the external metric",
    )
    assert stack.replicas(sandbox, ns, WORKER) == (1, 1)

    # Up.
    scale_up_s = scale_up(sandbox, ns)
    assert stack.hpa_view(stack.hpa(sandbox, ns, HPA))[0] == 4
    # `kubectl get hpa`'s REPLICAS is the HPA's status.currentReplicas, read at its next sync.
    shown = stack.wait_until(lambda: hpa_row(sandbox, ns, 4), HPA_SYNC_S + 10, "kubectl get hpa showing 4")
    print(f"\nscale-up 1 -> 4: {scale_up_s:.1f}s\n{shown}", flush=True)

    # Down, after the window: the HPA reads LOW (5 / 4 replicas = 1.25 a replica) and still wants 4 while
    # a recommendation of 4 is younger than SCALE_DOWN_WINDOW_S (syncs are 15 s apart, the window 20 s: at
    # least one sync holds), then 1.
    stack.set_value(sandbox, ns, LOW)
    started = time.monotonic()
    held: tuple[int, float | None, str] | None = None
    deadline = started + SCALE_DOWN_WINDOW_S + 2 * HPA_SYNC_S + 30
    while time.monotonic() < deadline:
        view = stack.hpa_view(stack.hpa(sandbox, ns, HPA))
        if view[0] == 4 and view[1] is not None and abs(view[1] - LOW / 4) < 0.01:
            held = held or view
        if replicas_when(sandbox, ns, 1)():
            break
        time.sleep(0.5)
    scale_down_s = stack.elapsed(started)
    assert stack.replicas(sandbox, ns, WORKER) == (1, 1), f"not back at 1 after {scale_down_s:.0f}s"
    assert held, "the HPA never held 4 replicas while it read the low value (no stabilization window seen)"
    print(
        f"scale-down 4 -> 1: {scale_down_s:.1f}s after the value fell (window {SCALE_DOWN_WINDOW_S}s; "
        f"HPA seen holding 4 at {held[1]} a replica)",
        flush=True,
    )

    # Nothing: back at 4, the series goes; the query returns an empty vector, and with ignoreNullValues
    # "false" KEDA's scaler errs, the HPA cannot compute (ScalingActive False, FailedGetExternalMetric)
    # and keeps 4, past the scale-down window and one more sync.
    scale_up_again_s = scale_up(sandbox, ns)
    stack.set_value(sandbox, ns, None)
    stack.wait_until(lambda: series(prometheus, ns) == [], 30, "the series gone from Prometheus")
    gone = time.monotonic()
    stack.wait_until(
        lambda: stack.hpa_view(stack.hpa(sandbox, ns, HPA))[2] == "FailedGetExternalMetric",
        HPA_SYNC_S + 30,
        "the HPA unable to read the metric",
    )
    failing = stack.condition(stack.hpa(sandbox, ns, HPA), "ScalingActive")
    hold_until = time.monotonic() + max(SCALE_DOWN_WINDOW_S, HPA_SYNC_S) + 5
    seen = set()
    while time.monotonic() < hold_until:
        seen.add(stack.replicas(sandbox, ns, WORKER))
        time.sleep(1)
    assert seen == {(4, 4)}, f"the replica count moved while the metric was missing: {seen}"
    assert stack.condition(stack.hpa(sandbox, ns, HPA), "ScalingActive").get("status") == "False"
    print(
        f"scale-up again: {scale_up_again_s:.1f}s; no value for {time.monotonic() - gone:.1f}s: "
        f"the HPA held 4 replicas, ScalingActive {failing.get('status')} {failing.get('reason')}: "
        f"{str(failing.get('message'))[:240]}",
        flush=True,
    )
    print(sandbox.kubectl("get", "hpa", "-n", ns).stdout, flush=True)
