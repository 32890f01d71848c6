"""Issue 20 on a real monitoring stack: the Prometheus Operator v0.85.0 renders the configuration of a real
Prometheus 3.16 (sandbox/monitoring.py) from the PodMonitor the operator makes for a TritonServer and the
chart's ServiceMonitor, loads the chart's PrometheusRule, and scrapes the real Triton pods and the
operator every 2 s. What an SRE checks: each pod and the operator are `up` targets, and the recorded
request rates are what the clients sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support import monitoring_stack as stack
from tests.support.chart import NAMESPACE as CHART_NAMESPACE
from tests.support.load import Load, service_clients
from tests.support.objects import POD_SELECTOR, apply, credentials_secret, tritonmodel, tritonserver
from tests.support.prometheus_http import query
from tests.support.scorer import MODEL, publish

pytestmark = pytest.mark.e2e
# A rate5m rule at time T is the increase over (T - 5 min, T] / 300 s; the test reads it within 5 min of
# the pods' start, so the whole load lies in the window.
RATE_WINDOW_S = 300


@pytest.fixture(scope="module")
def prometheus(sandbox: Sandbox, operator: Operator) -> Iterator[str]:
    """The Operator and Prometheus, with the chart's ServiceMonitor and PrometheusRule, for this module;
    all of it (and the Operator's CRDs) gone at its end."""
    started = time.monotonic()
    try:
        url = stack.start(sandbox)
        print(f"\nPrometheus Operator + Prometheus up in {time.monotonic() - started:.1f}s", flush=True)
        yield url
    finally:
        stack.stop(sandbox)


@pytest.fixture
def pool(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A namespace with the scorer published and the S3 credentials."""
    core = client.CoreV1Api(sandbox.api)
    ns = f"mon-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    publish(sandbox, tmp_path_factory.mktemp("monitoring"), f"{MODEL}/1", ADDER_PY, 1)
    apply(sandbox, ns, credentials_secret())
    yield ns
    core.delete_namespace(ns)


def watched_server(replicas: int) -> dict[str, Any]:
    server = tritonserver(replicas)
    key, value = stack.RELEASE_LABEL
    server["spec"]["monitoring"] = {
        "podMonitor": {"enabled": True, "labels": {key: value}, "interval": f"{stack.INTERVAL_S}s"}
    }
    return server


def ready_pod_names(sb: Sandbox, ns: str) -> set[str]:
    return {p.metadata.name for p in kube.ready_pods(client.CoreV1Api(sb.api), ns, POD_SELECTOR)}


def value(prometheus: str, expr: str) -> float:
    samples = query(prometheus, expr)
    assert len(samples) == 1, f"{expr}: {samples}"
    return float(samples[0]["value"][1])


@pytest.mark.alone  # installs the Prometheus Operator's CRDs, cluster-wide (test_monitoring needs none)
def test_pods_and_operator_scraped_and_rules_record_what_clients_sent(
    sandbox: Sandbox, prometheus: str, pool: str
) -> None:
    ns = pool
    interval = stack.INTERVAL_S
    apply(sandbox, ns, watched_server(2))

    # (a) Each Triton pod is an `up` target within two scrape intervals of being Ready (watched together,
    # every 0.25 s, from before any pod exists).
    ready_at: dict[str, float] = {}
    up_at: dict[str, float] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (len(ready_at) < 2 or set(up_at) < set(ready_at)):
        now = time.monotonic()
        for pod in ready_pod_names(sandbox, ns):
            ready_at.setdefault(pod, now)
        for pod, health in stack.pod_target_health(prometheus, ns).items():
            if health == "up":
                up_at.setdefault(pod, now)
        time.sleep(0.25)
    assert len(ready_at) == 2, f"2 ready Triton pods expected, saw {sorted(ready_at)}"
    assert set(ready_at) <= set(up_at), f"pods never an up target: {set(ready_at) - set(up_at)}"
    late = {pod: round(up_at[pod] - ready_at[pod], 2) for pod in ready_at}
    assert all(delay <= 2 * interval for delay in late.values()), f"seconds from Ready to up: {late}"

    # The operator's own /metrics, through the chart's ServiceMonitor.
    def operator_targets() -> list[str]:
        return [
            t["health"]
            for t in stack.targets(prometheus)
            if t["labels"].get("namespace") == CHART_NAMESPACE
            and t["scrapePool"].startswith(f"serviceMonitor/{CHART_NAMESPACE}/")
        ]

    stack.wait_until(lambda: operator_targets() == ["up"], 30, "the operator's target up")

    # (b) Under load, the recorded request rates (per pod, server, model and version) are what the
    # clients sent. The load stops before the rules are read, and they are read once two scrapes and two
    # evaluations have seen the last requests.
    apply(sandbox, ns, tritonmodel(MODEL, sandbox.cfg.s3_endpoint, prefix=f"{MODEL}/1"))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=180s")
    load = Load(service_clients(sandbox, ns), max_s=120).start()
    try:
        time.sleep(40)
    finally:
        load.finish()
    sent = sum(load.ok.values()) + len(load.failed)
    assert not load.failed, load.failed[:5]
    assert sent > 200, f"too few requests to compare: {sent}"
    time.sleep(2 * interval + 1)
    assert time.monotonic() - min(ready_at.values()) < RATE_WINDOW_S - 10, "the load left the rate window"

    sel = f'namespace="{ns}"'
    model_sel = f'{sel},model="{MODEL}"'
    recorded = {
        "per pod (sum)": f"sum(namespace_tritonserver_pod:triton_requests:rate5m{{{sel}}})",
        "per server": f"namespace_tritonserver:triton_requests:rate5m{{{sel}}}",
        "per model": f"namespace_tritonserver_model:triton_requests:rate5m{{{model_sel}}}",
        "per model and version": (
            f'namespace_tritonserver_model_version:triton_requests:rate5m{{{model_sel},version="1"}}'
        ),
    }
    counted = {what: value(prometheus, expr) * RATE_WINDOW_S for what, expr in recorded.items()}
    off = {what: round(n / sent - 1, 4) for what, n in counted.items()}
    assert all(abs(o) <= 0.05 for o in off.values()), f"clients sent {sent}; rules counted {counted}"
    failures = f"namespace_tritonserver_model:triton_request_failure:ratio_rate5m{{{model_sel}}}"
    assert value(prometheus, failures) == 0.0
