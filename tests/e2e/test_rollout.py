"""Canary rollouts on the sandbox (issue 9): a new version reaches traffic step by step through the
in-server router, judged by Triton's own per-version metrics, and rolls back by itself.

Clients call the public model name through the server's Service (its ClusterIP, as a client in the
cluster would) over HTTP and gRPC throughout; the test counts every failed request and measures each
step's split from Triton's own counters on every pod.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.kstatus_check import verdict as kstatus_verdict
from tests.support.load import Load, service_clients
from tests.support.models import FAILING_PY
from tests.support.objects import (
    apply,
    condition,
    credentials_secret,
    get_cr,
    server_pods,
    tritonmodel,
    tritonserver,
)
from tests.support.scorer import MODEL, canary_model, inference_counts, loaded_versions, publish, rollout_of

pytestmark = pytest.mark.e2e


# Version 2 that answers right, 20 ms late (the adder takes well under 1 ms here): many times slower.
SLOW_PY = ADDER_PY.replace(
    "    def execute(self, requests):\n",
    "    def execute(self, requests):\n        __import__('time').sleep(0.02)\n",
)


def serve_version_1(sb: Sandbox, ns: str, rollout: dict[str, Any]) -> None:
    """The model at version 1 with `rollout`, Ready (its router on every replica)."""
    apply(sb, ns, canary_model(sb, 1, f"{MODEL}/1", rollout))
    sb.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=240s")


@pytest.fixture(scope="module")
def published(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("rollout")
    publish(sandbox, workdir, f"{MODEL}/1", ADDER_PY, 1)
    publish(sandbox, workdir, f"{MODEL}/2", ADDER_PY, 2)
    publish(sandbox, workdir, f"{MODEL}-broken/2", FAILING_PY, 2)
    publish(sandbox, workdir, f"{MODEL}-slow/2", SLOW_PY, 2)


@pytest.fixture
def pool(sandbox: Sandbox, operator: Operator, published: None) -> Iterator[str]:
    core = client.CoreV1Api(sandbox.api)
    ns = f"ro-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    apply(sandbox, ns, credentials_secret(), tritonserver(2))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=180s")
    yield ns
    core.delete_namespace(ns)


@pytest.mark.alone  # 2,000 requests in each 15 s window: the throughput of a machine with nothing else on it
def test_canary_promotes_step_by_step_under_load_without_a_failed_request(
    sandbox: Sandbox, pool: str
) -> None:
    ns = pool
    rollout = {
        "strategy": "Canary",
        # Each share is measured over its step's pause less 5 s (below) and needs 2,000 requests: at
        # the ~180 a second a loaded CI machine manages, a 15 s pause measured 1,831.
        "steps": [
            {"weight": 10, "pauseSeconds": 20},
            {"weight": 50, "pauseSeconds": 25},
            {"weight": 100, "pauseSeconds": 5},
        ],
        "analysis": {
            "intervalSeconds": 5,
            "minRequests": 100,
            "maxFailureRatio": 0.01,
            "maxLatencyRatio": 20,
        },
    }
    serve_version_1(sandbox, ns, rollout)
    ips = [p.status.pod_ip for p in server_pods(sandbox, ns)]
    assert rollout_of(sandbox, ns)["stableVersion"] == "1"

    load = Load(service_clients(sandbox, ns)).start()
    shares: dict[int, tuple[float, int]] = {}  # step index -> (observed v2 %, requests) while it held
    try:
        apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}/2", rollout))
        for index in (0, 1):
            state = kube.wait_for(
                lambda index=index: (
                    (r := rollout_of(sandbox, ns)).get("phase") == "Progressing"
                    and r.get("canaryVersion") == "2"
                    and r.get("stepIndex") == index
                    and r
                ),
                240,
                f"step {index + 1}",
                interval_s=0.2,
            )
            # The window: once every replica's router has this step's weights, until just before the
            # step may end (its start + pause: the operator cannot move on earlier).
            started = datetime.fromisoformat(state["stepStartedAt"]).timestamp()
            time.sleep(3)
            before = inference_counts(ips)
            time.sleep(max(0.0, started + rollout["steps"][index]["pauseSeconds"] - 2 - time.time()))
            delta = inference_counts(ips) - before
            total = delta["1"] + delta["2"]
            shares[index] = (100.0 * delta["2"] / total if total else 0.0, total)
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Promoted" and r.get("stableVersion") == "2"
            ),
            240,
            "the promotion",
        )
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=60s")
    finally:
        load.finish()
    assert not load.failed, load.failed[:5]
    assert load.ok["http"] > 0 and load.ok["grpc"] > 0
    for index, desired in ((0, 10), (1, 50)):
        observed, total = shares[index]
        assert abs(observed - desired) <= 2, f"step {index + 1}: {observed:.1f}% of {total} vs {desired}%"
        assert total >= 2000, f"step {index + 1} measured only {total} requests"
    kube.wait_for(lambda: all(loaded_versions(ip) == {"2"} for ip in ips), 60, "version 1 unloaded")
    status = (get_cr(sandbox, ns, "tritonmodels", MODEL) or {})["status"]
    assert condition(status, "Ready")["status"] == "True"
    assert status["servedVersion"] == 2


def test_a_failing_canary_rolls_back_by_itself(sandbox: Sandbox, pool: str) -> None:
    ns = pool
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": 120}, {"weight": 100}],
        "analysis": {
            "intervalSeconds": 5,
            "minRequests": 100,
            "maxFailureRatio": 0.05,
            "maxLatencyRatio": 20,
        },
    }
    serve_version_1(sandbox, ns, rollout)
    load = Load(service_clients(sandbox, ns)).start()
    try:
        apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}-broken/2", rollout))
        kube.wait_for(
            lambda: rollout_of(sandbox, ns).get("phase") == "Progressing", 180, "the canary started"
        )
        started = time.monotonic()
        kube.wait_for(lambda: rollout_of(sandbox, ns).get("phase") == "RolledBack", 120, "the rollback")
        rolled_back_after = time.monotonic() - started
        time.sleep(5)  # the router on every replica is back at 100% stable
        before = len(load.failed)
        time.sleep(10)
        after_rollback = len(load.failed) - before
    finally:
        load.finish()
    status = (get_cr(sandbox, ns, "tritonmodels", MODEL) or {})["status"]
    degraded = condition(status, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolledBack", degraded
    assert "failure ratio" in degraded["message"], degraded["message"]
    assert after_rollback == 0, load.failed[-5:]
    assert load.failed, "the broken canary served some requests before the verdict"
    assert all("version 2 is broken" in f.message for f in load.failed), load.failed[:5]
    assert rolled_back_after < 60, rolled_back_after
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RolledBack"
    # kstatus (Flux's health checks) reads it Failed with the measured numbers, not InProgress for ever.
    stalled = condition(status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "RolledBack", stalled
    assert condition(status, "Reconciling")["status"] == "False"
    said = kstatus_verdict(get_cr(sandbox, ns, "tritonmodels", MODEL) or {})
    assert said[0] == "Failed" and "failure ratio" in said[1], said


def promoted_to(sb: Sandbox, ns: str, version: str) -> bool:
    rollout = rollout_of(sb, ns)
    return rollout.get("phase") == "Promoted" and rollout.get("stableVersion") == version


def annotate(sb: Sandbox, ns: str, command: str) -> None:
    value = f"{command} {time.time_ns()}"
    sb.kubectl(
        "annotate", "-n", ns, f"tritonmodel/{MODEL}", f"tritonoperator.dev/rollout={value}", "--overwrite"
    )


def spec_of(sb: Sandbox, ns: str) -> dict[str, Any]:
    return dict((get_cr(sb, ns, "tritonmodels", MODEL) or {})["spec"])


def test_manual_abort_retry_and_promote_change_no_spec_field(sandbox: Sandbox, pool: str) -> None:
    ns = pool
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 10, "pauseSeconds": 3600}, {"weight": 100, "pauseSeconds": 0}],
        "analysis": {"intervalSeconds": 5, "minRequests": 10},
    }
    serve_version_1(sandbox, ns, rollout)
    ips = [p.status.pod_ip for p in server_pods(sandbox, ns)]
    apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}/2", rollout))
    kube.wait_for(lambda: rollout_of(sandbox, ns).get("phase") == "Progressing", 240, "the canary's start")
    spec = spec_of(sandbox, ns)
    load = Load(service_clients(sandbox, ns)).start()
    try:
        annotate(sandbox, ns, "abort")
        aborted = kube.wait_for(
            lambda: (r := rollout_of(sandbox, ns)).get("phase") == "Aborted" and r, 60, "abort"
        )
        assert aborted["canaryWeight"] == 0
        time.sleep(5)  # every router at 100% stable: version 2 serves nothing more
        served = inference_counts(ips)["2"]
        time.sleep(5)
        assert inference_counts(ips)["2"] == served
        annotate(sandbox, ns, "retry")
        kube.wait_for(
            lambda: (r := rollout_of(sandbox, ns)).get("phase") == "Progressing" and r.get("stepIndex") == 0,
            60,
            "the retry at step 1",
        )
        annotate(sandbox, ns, "promote")
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Promoted" and r.get("stableVersion") == "2"
            ),
            120,
            "the promotion by command",
        )
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=60s")
    finally:
        load.finish()
    assert not load.failed, load.failed[:5]
    assert spec_of(sandbox, ns) == spec  # no spec field was changed by the commands or the operator


def test_a_step_without_traffic_waits_and_says_so_then_goes_on(sandbox: Sandbox, pool: str) -> None:
    ns = pool
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": 5}, {"weight": 100, "pauseSeconds": 5}],
        "analysis": {"intervalSeconds": 5, "minRequests": 200},
    }
    serve_version_1(sandbox, ns, rollout)
    apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}/2", rollout))
    waiting = kube.wait_for(
        lambda: "inconclusive" in (r := rollout_of(sandbox, ns)).get("message", "") and r,
        120,
        "an inconclusive step",
    )
    assert waiting["phase"] == "Progressing" and waiting["stepIndex"] == 0
    assert "of 200" in waiting["message"], waiting["message"]
    time.sleep(15)  # well past the pause: without traffic the step still holds
    assert rollout_of(sandbox, ns)["stepIndex"] == 0
    load = Load(service_clients(sandbox, ns)).start()
    try:
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Promoted" and r.get("stableVersion") == "2"
            ),
            180,
            "the promotion once traffic came",
        )
    finally:
        load.finish()
    assert not load.failed, load.failed[:5]


@pytest.mark.alone  # kills the operator every test shares
def test_an_operator_killed_mid_step_resumes_at_the_same_step(
    sandbox: Sandbox, pool: str, operator: Operator
) -> None:
    ns = pool
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 20, "pauseSeconds": 40}, {"weight": 100, "pauseSeconds": 5}],
        "analysis": {"intervalSeconds": 5, "minRequests": 50, "maxLatencyRatio": 9},
    }
    serve_version_1(sandbox, ns, rollout)
    load = Load(service_clients(sandbox, ns)).start()
    try:
        apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}/2", rollout))
        before = kube.wait_for(
            lambda: (r := rollout_of(sandbox, ns)).get("phase") == "Progressing" and r, 240, "step 1"
        )
        time.sleep(5)
        operator.kill()
        time.sleep(5)
        operator.start()
        time.sleep(10)  # the restarted operator has looked at it, and reloaded every router
        after = rollout_of(sandbox, ns)
        assert (after["stepIndex"], after["stepStartedAt"]) == (before["stepIndex"], before["stepStartedAt"])
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Promoted" and r.get("stableVersion") == "2"
            ),
            180,
            "the promotion after the restart",
        )
    finally:
        load.finish()
    assert not load.failed, load.failed[:5]


def test_a_canary_whose_staging_fails_moves_no_traffic(sandbox: Sandbox, pool: str) -> None:
    ns = pool
    rollout = {"strategy": "Canary", "steps": [{"weight": 50, "pauseSeconds": 5}, {"weight": 100}]}
    serve_version_1(sandbox, ns, rollout)
    apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}/missing", rollout))

    def staging_failed() -> dict[str, Any] | None:
        status = (get_cr(sandbox, ns, "tritonmodels", MODEL) or {}).get("status") or {}
        return status if condition(status, "Staged").get("reason") == "SourceNotFound" else None

    status = kube.wait_for(staging_failed, 120, "Staged=False SourceNotFound")
    assert condition(status, "Ready")["status"] == "False"
    stalled = condition(status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SourceNotFound", stalled
    assert kstatus_verdict(get_cr(sandbox, ns, "tritonmodels", MODEL) or {})[0] == "Failed"
    assert status["rollout"]["canaryWeight"] in (0, 100) and status["rollout"]["stableVersion"] == "1"
    assert next(t for t in status["traffic"] if t["version"] == "1")["desiredWeight"] == 100
    ips = [p.status.pod_ip for p in server_pods(sandbox, ns)]
    load = Load(service_clients(sandbox, ns), max_s=5).start()
    time.sleep(5)
    load.finish()
    assert not load.failed and sum(load.ok.values()) > 0
    assert inference_counts(ips)["2"] == 0


def send(ip: str, count: int, headers: dict[str, str] | None = None) -> None:
    """`count` HTTP requests to the public name, one at a time, each checked."""
    http = triton_http.InferenceServerClient(f"{ip}:8000", network_timeout=30)
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    try:
        for _ in range(count):
            assert float(http.infer(MODEL, [inp], headers=headers).as_numpy("OUTPUT0")[0][0]) == 2.0
    finally:
        http.close()


def test_an_ab_experiment_holds_its_split_and_keeps_users_on_their_variant(
    sandbox: Sandbox, pool: str
) -> None:
    ns = pool
    model = tritonmodel(MODEL, sandbox.cfg.s3_endpoint, prefix=f"{MODEL}/1")
    second = tritonmodel(MODEL, sandbox.cfg.s3_endpoint, prefix=f"{MODEL}/2")["spec"]["source"]
    model["spec"]["experiment"] = {
        "stickyKey": "x-user-id",
        "variants": [{"version": 1, "weight": 80}, {"version": 2, "weight": 20, "source": second}],
    }
    apply(sandbox, ns, model)
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=300s")
    ips = [p.status.pod_ip for p in server_pods(sandbox, ns)]
    before = inference_counts(ips)
    load = Load(service_clients(sandbox, ns)).start()
    kube.wait_for(lambda: sum((inference_counts(ips) - before).values()) >= 10_000, 300, "10,000 requests")
    load.finish()
    assert not load.failed, load.failed[:5]
    delta = inference_counts(ips) - before
    share = 100.0 * delta["2"] / (delta["1"] + delta["2"])
    assert abs(share - 20.0) <= 1.0, f"version 2 served {share:.2f}% of {delta.total()}"

    for user in ("ada", "grace", "linus", "margaret", "ken"):  # each user always sees one variant
        for ip in ips:
            start = inference_counts(ips)
            send(ip, 15, headers={"x-user-id": user})
            moved = inference_counts(ips) - start
            assert sorted(moved.values()) in ([15], [0, 15]), f"{user} on {ip}: {moved}"
    start = inference_counts(ips)
    send(ips[0], 20, headers={"x-triton-variant": "2", "x-user-id": "ada"})  # the pin wins over everything
    assert inference_counts(ips) - start == Counter({"2": 20})
    status = (get_cr(sandbox, ns, "tritonmodels", MODEL) or {})["status"]
    roles = {t["version"]: (t["role"], t["desiredWeight"]) for t in status["traffic"]}
    assert roles == {"1": ("variant", 80), "2": ("variant", 20)}


def test_a_slow_canary_rolls_back_on_latency(sandbox: Sandbox, pool: str) -> None:
    assert "sleep(0.02)" in SLOW_PY
    ns = pool
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": 120}, {"weight": 100}],
        "analysis": {"intervalSeconds": 5, "minRequests": 100, "maxFailureRatio": 0.05, "maxLatencyRatio": 3},
    }
    serve_version_1(sandbox, ns, rollout)
    load = Load(service_clients(sandbox, ns)).start()
    try:
        apply(sandbox, ns, canary_model(sandbox, 2, f"{MODEL}-slow/2", rollout))
        kube.wait_for(lambda: rollout_of(sandbox, ns).get("phase") == "RolledBack", 240, "the rollback")
    finally:
        load.finish()
    assert not load.failed, load.failed[:5]  # slow is not failed: every request was answered
    degraded = condition((get_cr(sandbox, ns, "tritonmodels", MODEL) or {})["status"], "Degraded")
    assert degraded["reason"] == "RolledBack" and "p99" in degraded["message"], degraded


@pytest.mark.alone  # a latency bound (5 x p99, at least 250 ms) that other tests' CPU load would threaten
def test_loading_another_model_does_not_stall_this_ones_http_clients(sandbox: Sandbox, pool: str) -> None:
    """Repository loads go over gRPC: an HTTP load would stall every in-flight HTTP inference."""
    ns = pool
    apply(sandbox, ns, tritonmodel(MODEL, sandbox.cfg.s3_endpoint, prefix=f"{MODEL}/1"))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=240s")
    ip = server_pods(sandbox, ns)[0].status.pod_ip
    http = triton_http.InferenceServerClient(f"{ip}:8000", network_timeout=30)
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))

    def latencies(seconds: float) -> list[float]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            http.infer(MODEL, [inp])
            out.append(time.perf_counter() - start)
        return out

    try:
        before = sorted(latencies(5))
        p99 = before[int(len(before) * 0.99)]
        other = tritonmodel("other", sandbox.cfg.s3_endpoint, prefix=f"{MODEL}/1")
        apply(sandbox, ns, other)
        during: list[float] = []
        deadline = time.monotonic() + 180
        while (
            condition((get_cr(sandbox, ns, "tritonmodels", "other") or {}).get("status") or {}, "Ready").get(
                "status"
            )
            != "True"
        ):
            assert time.monotonic() < deadline, "the other model never got Ready"
            during += latencies(0.5)
    finally:
        http.close()
    assert during, "no request ran while the other model loaded"
    assert max(during) <= max(5 * p99, 0.25), (
        f"max {max(during) * 1000:.0f} ms vs p99 {p99 * 1000:.1f} ms before"
    )
