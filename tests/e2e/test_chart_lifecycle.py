"""The chart's life as a platform team lives it, with README's own commands ("Installing it"), on the
session's release: uninstall with models present, install the previous release (0.1.0, whose CRDs lack
fields this one has), upgrade to this one. Servers and models serve throughout, under client load: the
operator is never in the data path. The session's operator is this release again afterwards.
"""

from __future__ import annotations

import os
import signal
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from sandbox.config import REPO_ROOT
from tests.e2e import kube
from tests.e2e.conftest import Sandbox
from tests.e2e.incluster import CHART, PSS_LABELS, ChartOperator
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.load import Load, service_clients
from tests.support.objects import apply, credentials_secret, get_cr, tritonmodel, tritonserver
from tests.support.scorer import MODEL, publish

# alone: it uninstalls, downgrades and upgrades the session's operator (and its CRDs).
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

# The previous release: `helm package` of charts/triton-operator at commit 48a06b4 (before the Gateway
# API fields and the Lease election), as a platform team would have it from a chart repository.
PREVIOUS_CHART = REPO_ROOT / "tests" / "fixtures" / "charts" / "triton-operator-0.1.0.tgz"
FINALIZER = "tritonoperator.dev/finalizer"
DOOMED = "doomed"  # a second model, deleted while no operator runs
GROUP, VERSION = "tritonoperator.dev", "v1alpha1"
# README's takeover bound after a leader's crash (lease duration 15 s + retry period 2 s), and what a
# loaded 2-core machine adds to it (a read and a write of the Lease).
LEASE_BOUND_S, SLACK_S = 17.0, 3.0


@pytest.fixture(scope="module")
def serving(
    sandbox: Sandbox, operator: ChartOperator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A namespace enforcing Pod Security "restricted" (README: Triton pods and staging Jobs pass it)
    with a 2-replica TritonServer and two TritonModels, Ready."""
    publish(sandbox, tmp_path_factory.mktemp("lifecycle"), f"{MODEL}/1", ADDER_PY, 1)
    core = client.CoreV1Api(sandbox.api)
    ns = f"lc-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true", **PSS_LABELS}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    models = [tritonmodel(name, sandbox.cfg.s3_endpoint, prefix=f"{MODEL}/1") for name in (MODEL, DOOMED)]
    apply(sandbox, ns, credentials_secret(), tritonserver(2), *models)
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=180s")
    for name in (MODEL, DOOMED):
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{name}", "--timeout=240s")
    yield ns
    core.delete_namespace(ns)


def triton_pods_ready(sb: Sandbox, ns: str) -> list[Any]:
    """The server's Ready Triton pods."""
    selector = "app.kubernetes.io/instance=triton,app.kubernetes.io/component=server"
    return kube.ready_pods(client.CoreV1Api(sb.api), ns, selector)


def ready_condition(sb: Sandbox, ns: str, plural: str, name: str) -> dict[str, Any]:
    obj = get_cr(sb, ns, plural, name) or {}
    return next(c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready")


def test_uninstall_keeps_everything_serving_and_a_reinstall_finishes_pending_deletes(
    sandbox: Sandbox, operator: ChartOperator, serving: str
) -> None:
    ns = serving
    load = Load(service_clients(sandbox, ns)).start()
    try:
        operator.uninstall()  # README "Uninstall"
        # CRDs, servers, models and their finalizers stay; a delete now waits for an operator.
        assert get_cr(sandbox, ns, "tritonmodels", MODEL)["metadata"]["finalizers"] == [FINALIZER]
        sandbox.kubectl("delete", "-n", ns, f"tritonmodel/{DOOMED}", "--wait=false")
        time.sleep(5)  # a while without an operator
        doomed = get_cr(sandbox, ns, "tritonmodels", DOOMED)
        assert doomed and doomed["metadata"].get("deletionTimestamp"), "the model is Terminating"
        assert doomed["metadata"]["finalizers"] == [FINALIZER]
    finally:
        load.finish()
    assert sum(load.ok.values()) > 100, load.ok
    assert not load.failed, load.failed[:5]  # nothing fails without an operator
    # The previous release, as a cluster that ran it has it: its CRDs (Helm installed them with it),
    # then README "Install" of its package. Its operator finishes the pending delete. Going back is a
    # downgrade: its pod template has no models-loaded readiness gate, so the Triton pods roll once
    # (a roll may cut a request in flight on a connection to a replaced pod, README; not counted here).
    old = sandbox.cfg.root / "previous-chart"
    with tarfile.open(PREVIOUS_CHART) as tar:
        tar.extractall(old, filter="data")
    sandbox.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(old / "triton-operator" / "crds")
    )
    operator.install(chart=PREVIOUS_CHART)
    kube.wait_for(
        lambda: get_cr(sandbox, ns, "tritonmodels", DOOMED) is None, 90, "the pending delete to finish"
    )
    for kind in ("tritonserver/triton", f"tritonmodel/{MODEL}"):
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", kind, "--timeout=180s")
    # Both checks above can pass before the roll starts (the gated pods are still Ready) or half-way
    # through it; a gateless pod is Ready before its models are loaded. The roll is over once both
    # Ready pods are of the gateless template and serve the model.
    kube.wait_for(lambda: rolled_to_gateless_and_serving(sandbox, ns), 180, "the downgrade's roll to finish")


def rolled_to_gateless_and_serving(sb: Sandbox, ns: str) -> bool:
    """Whether the server's pods are exactly two Ready pods without the models-loaded readiness gate,
    each answering that MODEL is ready."""
    selector = "app.kubernetes.io/instance=triton,app.kubernetes.io/component=server"
    pods = client.CoreV1Api(sb.api).list_namespaced_pod(ns, label_selector=selector).items
    ready = triton_pods_ready(sb, ns)
    if len(pods) != 2 or len(ready) != 2 or any(p.spec.readiness_gates for p in pods):
        return False
    return all(model_ready_on(p.status.pod_ip) for p in ready)


def model_ready_on(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8000/v2/models/{MODEL}/ready", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_upgrade_from_the_previous_release_with_changed_crds_serves_throughout(
    sandbox: Sandbox, operator: ChartOperator, serving: str
) -> None:
    ns = serving
    assert operator.installed_chart == PREVIOUS_CHART, "runs after the reinstall of the previous release"
    # The previous CRDs do not know this release's fields.
    assert sandbox.kubectl("explain", "tritonservers.spec.gateway", check=False).returncode != 0
    server_ready = ready_condition(sandbox, ns, "tritonservers", "triton")
    model_ready = ready_condition(sandbox, ns, "tritonmodels", MODEL)
    histories = [
        kube.ConditionHistory(sandbox.api, GROUP, VERSION, plural, ns, name)
        for plural, name in (("tritonservers", "triton"), ("tritonmodels", MODEL))
    ]
    load = Load(service_clients(sandbox, ns)).start()
    try:
        upgraded_at = datetime.now(UTC)
        operator.run_readme("upgrade")  # README "Upgrade": the CRDs server-side, then helm upgrade
        pods = operator.ready_pods()
        assert [p.metadata.labels["helm.sh/chart"] for p in pods] == [f"triton-operator-{chart_version()}"]
        # The new operator acts: its pod holds the Lease and the model's metrics move on.
        kube.wait_for(
            lambda: lease_holder(sandbox).startswith(operator.ready_pods()[0].metadata.name),
            60,
            "the new pod to hold the Lease",
        )
        kube.wait_for(
            lambda: metrics_refreshed_at(sandbox, ns) > upgraded_at,
            60,
            "the model's live metrics in status, refreshed by the upgraded operator",
        )
    finally:
        load.finish()
        seen = [h.stop() for h in histories]
        operator.tune_for_tests()  # the rest of the session: this release, the faster status period
    assert sum(load.ok.values()) > 100, load.ok
    assert not load.failed, load.failed[:5]
    # No status lost, no blip: Ready stayed True, since before the upgrade.
    assert ready_condition(sandbox, ns, "tritonservers", "triton") == server_ready
    assert (
        ready_condition(sandbox, ns, "tritonmodels", MODEL)["lastTransitionTime"]
        == (model_ready["lastTransitionTime"])
    )
    for history in seen:
        assert ("Ready", "False") not in {(t, s) for t, s, _ in history}, history
    # The upgraded CRDs serve this release's fields.
    assert "parentRefs" in sandbox.kubectl("explain", "tritonservers.spec.gateway").stdout


def metrics_refreshed_at(sb: Sandbox, ns: str) -> datetime:
    metrics = ((get_cr(sb, ns, "tritonmodels", MODEL) or {}).get("status") or {}).get("metrics") or {}
    stamp = metrics.get("refreshedAt")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else datetime.min.replace(tzinfo=UTC)


def chart_version() -> str:
    for line in (CHART / "Chart.yaml").read_text().splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("Chart.yaml has no version")


def lease_holder(sb: Sandbox) -> str:
    lease = client.CoordinationV1Api(sb.api).read_namespaced_lease("triton-operator", "triton-operator")
    return str(lease.spec.holder_identity or "")


def reconciles(ip: str) -> float:
    """The sum of an operator pod's triton_operator_reconcile_total (0 for a standby: it acts on nothing)."""
    with urllib.request.urlopen(f"http://{ip}:8081/metrics", timeout=3) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("triton_operator_reconcile_total{")
    )


def test_two_replicas_one_acts_and_the_standby_takes_over_a_killed_leader(
    sandbox: Sandbox, operator: ChartOperator, serving: str
) -> None:
    """README: with replicaCount 2 the second pod is a hot standby; a standby takes over within 17 s of
    the leader's crash (lease 15 s + retry 2 s); no two pods act at once."""
    operator.run_helm(
        "upgrade", "triton-operator", str(CHART), "--reuse-values", "--set", "replicaCount=2", "--wait"
    )
    try:
        kube.wait_for(
            lambda: len(operator.ready_pods()) == 2 and len(operator.pids()) == 2, 90, "two operator pods"
        )
        ips = {p.metadata.name: p.status.pod_ip for p in operator.ready_pods()}
        leader = kube.wait_for(
            lambda: next((n for n in ips if lease_holder(sandbox).startswith(n)), None), 30, "a leader"
        )
        (standby,) = set(ips) - {leader}
        first = {n: reconciles(ip) for n, ip in ips.items()}
        time.sleep(2 * operator.status_period_s + 1)  # a few status passes of the serving namespace
        second = {n: reconciles(ip) for n, ip in ips.items()}
        assert second[leader] > first[leader], "the leader acts"
        assert first[standby] == second[standby] == 0, "the standby acts on nothing"

        os.kill(operator.pids()[leader], signal.SIGKILL)
        killed_at = time.monotonic()
        kube.wait_for(
            lambda: lease_holder(sandbox).startswith(standby), LEASE_BOUND_S + 10, "the standby to take over"
        )
        takeover_s = time.monotonic() - killed_at
        print(f"takeover after SIGKILL of the leader: {takeover_s:.1f} s (bound {LEASE_BOUND_S} s)")
        assert takeover_s <= LEASE_BOUND_S + SLACK_S
        # The killed container restarts as a standby (a new process, a new identity): still one actor.
        kube.wait_for(
            lambda: len(operator.pids()) == 2 and len(operator.ready_pods()) == 2, 90, "the restarted pod"
        )
        first = {n: reconciles(ip) for n, ip in ips.items()}
        time.sleep(2 * operator.status_period_s + 1)
        second = {n: reconciles(ip) for n, ip in ips.items()}
        assert second[standby] > first[standby], "the new leader acts"
        assert first[leader] == second[leader] == 0, "the restarted old leader waits"
        assert ready_condition(sandbox, serving, "tritonmodels", MODEL)["status"] == "True"
    finally:
        operator.run_helm(
            "upgrade", "triton-operator", str(CHART), "--reuse-values", "--set", "replicaCount=1", "--wait"
        )
        kube.wait_for(lambda: len(operator.pods()) == 1, 90, "one operator pod again")
