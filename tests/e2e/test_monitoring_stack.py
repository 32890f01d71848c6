"""Issue 20 on a real monitoring stack: the Prometheus Operator v0.85.0 renders the configuration of a real
Prometheus 3.16 (sandbox/monitoring.py) from the PodMonitor the operator makes for a TritonServer and the
chart's ServiceMonitor, loads the chart's PrometheusRule, and scrapes the real Triton pods and the
operator every 2 s. What an SRE checks: each pod and the operator are `up` targets, the recorded
request rates are what the clients sent, a canary's recorded split is the one its status shows, and the
alerts fire and resolve: a canary failing 30 % of its requests (resolved about a minute after its rollback,
by the alert's 1m window) and the operator scaled to 0. The chart's rules hold those two alerts 10 s
instead of minutes (metrics.prometheusRule.alertFor, stack.ALERT_FOR)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support import monitoring_stack as stack
from tests.support.chart import NAMESPACE as CHART_NAMESPACE
from tests.support.chart import RELEASE as CHART_RELEASE
from tests.support.load import Load, service_clients
from tests.support.models import FAILING_30_PY
from tests.support.objects import (
    POD_SELECTOR,
    SERVER,
    apply,
    credentials_secret,
    get_cr,
    tritonmodel,
    tritonserver,
)
from tests.support.prometheus_http import query
from tests.support.scorer import MODEL, canary_model, publish, rollout_command, rollout_of

pytestmark = pytest.mark.e2e
ALERT = "TritonModelFailureRatioHigh"
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

    # (a) Each Triton pod is an `up` target within two scrape intervals of being Ready, plus the time
    # Prometheus itself takes to turn a discovered pod into a target (stack.DISCOVERY_DELAY_S: its
    # discovery manager batches changes every 5 s, a constant of its code); the operator's part is that the
    # PodMonitor is there before any pod is Ready. Watched together, every 0.25 s, from before any pod exists.
    ready_at: dict[str, float] = {}
    up_at: dict[str, float] = {}
    monitor_before_ready: bool | None = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (len(ready_at) < 2 or set(up_at) < set(ready_at)):
        now = time.monotonic()
        monitor_exists = stack.pod_monitor_exists(sandbox, ns, SERVER)
        for pod in ready_pod_names(sandbox, ns):
            ready_at.setdefault(pod, now)
            if monitor_before_ready is None:
                monitor_before_ready = monitor_exists
        for pod, health in stack.pod_target_health(prometheus, ns).items():
            if health == "up":
                up_at.setdefault(pod, now)
        time.sleep(0.25)
    assert len(ready_at) == 2, f"2 ready Triton pods expected, saw {sorted(ready_at)}"
    assert set(ready_at) <= set(up_at), f"pods never an up target: {set(ready_at) - set(up_at)}"
    assert monitor_before_ready, "the PodMonitor did not exist when the first pod was Ready"
    late = {pod: round(up_at[pod] - ready_at[pod], 2) for pod in ready_at}
    bound = 2 * interval + stack.DISCOVERY_DELAY_S
    print(f"seconds from Ready to an up target: {late} (bound {bound} s)")
    assert all(d <= bound for d in late.values()), f"seconds from Ready to up (bound {bound} s): {late}"

    # The operator's own /metrics, through the chart's ServiceMonitor.
    stack.wait_until(
        lambda: stack.operator_target_health(prometheus) == ["up"], 30, "the operator's target up"
    )

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


def traffic_of(sb: Sandbox, ns: str) -> dict[str, dict[str, Any]]:
    """status.traffic by version."""
    status = (get_cr(sb, ns, "tritonmodels", MODEL) or {}).get("status") or {}
    return {entry["version"]: entry for entry in status.get("traffic") or []}


@pytest.mark.alone  # the Prometheus Operator's CRDs, cluster-wide
def test_a_canary_split_as_status_says_and_its_failures_alerted_until_the_rollback(
    sandbox: Sandbox, prometheus: str, pool: str, tmp_path: Path
) -> None:
    """(e) During a canary, Prometheus's per-version request rates split as status.traffic's observed
    share says (within 2 pp, over the same requests); (c) the canary failing 30 % of its requests fires
    TritonModelFailureRatioHigh, and the alert resolves within about a minute of the rollback."""
    ns = pool
    interval = stack.INTERVAL_S
    publish(sandbox, tmp_path, f"{MODEL}-failing/2", FAILING_30_PY, 2)
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 30, "pauseSeconds": 600}, {"weight": 100}],
        # The analysis lets 30 % failures pass (limit 50 %): the alert is what sees them, and the canary is
        # rolled back by hand (`abort`) once it fired.
        "analysis": {
            "intervalSeconds": 5,
            "minRequests": 100,
            "maxFailureRatio": 0.5,
            "maxLatencyRatio": 20,
        },
    }
    apply(sandbox, ns, watched_server(2))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=240s")
    apply(sandbox, ns, canary_model(sandbox, 1, f"{MODEL}/1", rollout))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=240s")
    apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}-failing/2", rollout))
    # No request before the operator's window for this step has started (status.traffic shows its
    # counts): then its window and Prometheus's 5m window hold the same requests.
    stack.wait_until(
        lambda: (
            rollout_of(sandbox, ns).get("phase") == "Progressing"
            and all("requests" in e for e in traffic_of(sandbox, ns).values())
            and len(traffic_of(sandbox, ns)) == 2
        ),
        240,
        "the canary's step and its traffic window",
    )
    step_started = datetime.fromisoformat(rollout_of(sandbox, ns)["stepStartedAt"]).timestamp()
    load = Load(service_clients(sandbox, ns), max_s=240).start()
    load_started = time.monotonic()
    fired_at: float | None = None
    try:
        deadline = load_started + 20
        while time.monotonic() < deadline:
            if (
                fired_at is None
                and stack.alert_state(prometheus, ALERT, namespace=ns, version="2") == "firing"
            ):
                fired_at = time.monotonic()
            time.sleep(0.5)
    finally:
        load.finish()
    sent = sum(load.ok.values()) + len(load.failed)
    assert sent > 200, f"too few requests to compare: {sent}"

    # (e) Once the operator and Prometheus have both seen the last request: the same requests, the split.
    def counts(traffic: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {v: (e.get("requests"), e.get("observedShare")) for v, e in traffic.items()}

    deadline = time.monotonic() + 60
    while True:
        first = counts(traffic_of(sandbox, ns))
        time.sleep(4)  # longer than the operator's status period in tests (3 s)
        traffic = traffic_of(sandbox, ns)
        counted = sum(e.get("requests", 0) for e in traffic.values())
        if first == counts(traffic) and counted >= sent * 0.95:
            break
        assert time.monotonic() < deadline, (
            f"status.traffic never settled on the {sent} requests the clients sent: {first} then "
            f"{counts(traffic)}; rollout {rollout_of(sandbox, ns)}"
        )
    time.sleep(2 * interval + 1)
    assert time.monotonic() - load_started < RATE_WINDOW_S - 10, "the load left the rate window"
    rates = {
        v: value(
            prometheus,
            f'namespace_tritonserver_model_version:triton_requests:rate5m{{namespace="{ns}",model="{MODEL}",version="{v}"}}',
        )
        for v in ("1", "2")
    }
    recorded_share = 100.0 * rates["2"] / (rates["1"] + rates["2"])
    status_share = float(traffic["2"]["observedShare"])
    print(
        f"\ncanary share: recorded {recorded_share:.2f} %, status.traffic {status_share:.1f} % "
        f"(status counted {traffic['1'].get('requests')} + {traffic['2'].get('requests')} requests, "
        f"clients sent {sent}; step started {time.time() - step_started:.0f} s ago)",
        flush=True,
    )
    assert abs(recorded_share - status_share) <= 2, (recorded_share, status_share, traffic, rates)

    # (c) The alert fired for the failing version (or does, on the same recorded failures).
    if fired_at is None:
        stack.wait_until(
            lambda: stack.alert_state(prometheus, ALERT, namespace=ns, version="2") == "firing",
            30,
            f"{ALERT} firing for version 2",
        )
        fired_at = time.monotonic()
    (alert,) = stack.alerts(prometheus, ALERT, namespace=ns, version="2")
    assert alert["labels"]["model"] == MODEL and alert["labels"]["severity"] == "critical", alert
    assert "version 2" in alert["annotations"]["description"], alert
    print(
        f"{ALERT} firing {fired_at - load_started:.1f} s after the failing load began: {alert['annotations']}"
    )

    # The rollback (`abort`: the stable version takes all traffic back), then the alert resolves.
    load = Load(service_clients(sandbox, ns), max_s=240).start()
    try:
        time.sleep(3)
        rollout_command(sandbox, ns, "abort")
        stack.wait_until(lambda: rollout_of(sandbox, ns).get("phase") == "Aborted", 60, "the rollback")
        rolled_back_at = time.monotonic()
        time.sleep(5)  # every replica's router back at 100 % stable
    finally:
        load.finish()
    assert stack.alert_state(prometheus, ALERT, namespace=ns, version="2") == "firing"
    stack.wait_until(
        lambda: stack.alert_state(prometheus, ALERT, namespace=ns, version="2") == "inactive",
        120,
        f"{ALERT} resolved after the rollback",
    )
    resolved_after = time.monotonic() - rolled_back_at
    long_window = query(
        prometheus,
        f'namespace_tritonserver_model_version:triton_request_failure:ratio_rate5m{{namespace="{ns}",version="2"}}',
    )
    print(
        f"{ALERT} resolved {resolved_after:.1f} s after the rollback; the 5m failure ratio of version 2 "
        f"then: {[s['value'][1] for s in long_window]}",
        flush=True,
    )
    assert resolved_after <= 60 + 4 * interval + 10, resolved_after


@pytest.mark.alone  # scales the shared operator to 0
def test_operator_down_alert_fires_when_it_is_scaled_to_zero(
    sandbox: Sandbox, prometheus: str, operator: Operator
) -> None:
    """(d) The chart's operator Deployment scaled to 0: TritonOperatorDown fires; back at 1 (and leading),
    it resolves."""
    stack.wait_until(
        lambda: stack.operator_target_health(prometheus) == ["up"], 60, "the operator's target up"
    )
    assert stack.alert_state(prometheus, "TritonOperatorDown") == "inactive"
    fired_after = None
    try:
        sandbox.kubectl("scale", "-n", CHART_NAMESPACE, f"deployment/{CHART_RELEASE}", "--replicas=0")
        stopped = time.monotonic()
        stack.wait_until(
            lambda: stack.alert_state(prometheus, "TritonOperatorDown") == "firing",
            120,
            "TritonOperatorDown firing",
        )
        fired_after = time.monotonic() - stopped
        (alert,) = stack.alerts(prometheus, "TritonOperatorDown")
        assert alert["labels"]["severity"] == "critical", alert
        assert alert["annotations"]["summary"] == "No triton-operator has been scraped for 10 seconds.", alert
    finally:
        operator.start()  # scale to 1 and wait for its ready pod
        stack.wait_until(stack.operator_leading(sandbox), 90, "the operator back and leading")
    back = time.monotonic()
    stack.wait_until(
        lambda: stack.alert_state(prometheus, "TritonOperatorDown") == "inactive",
        60,
        "TritonOperatorDown resolved",
    )
    print(
        f"\nTritonOperatorDown firing {fired_after:.1f} s after the scale to 0 (hold 10 s); "
        f"resolved {time.monotonic() - back:.1f} s after the operator led again",
        flush=True,
    )
