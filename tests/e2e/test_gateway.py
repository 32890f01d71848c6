"""Through a real Gateway (Contour + Envoy in the sandbox, issue 10): servers exposed by their own routes,
a model split across TritonServers by weight as a held A/B and as a canary, judged on each pool's own
Triton counters, with every client request counted.

Clients call the Gateway's address as a client outside the pools would: HTTP with the model's host name,
gRPC with :authority set to it (a gRPC split is per host name, see render/routes.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from sandbox import gateway as gw
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.gateway import host_of, pool_server, split_model
from tests.support.load import GatewayLoad, grpc_caller, http_infer
from tests.support.models import FAILING_PY
from tests.support.objects import apply, condition, credentials_secret, events, get_cr, kubectl_table
from tests.support.scorer import MODEL, publish

# alone: its waits (Routed within 60 s, a canary promoted within 240 s) failed beside other modules on a
# loaded machine (twice in two parallel runs, a different wait each time): kept serial to stay unflaky.
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

POOLS = ("pool-a", "pool-b")


def pool_counts(sb: Sandbox, ns: str, metric: str = "nv_inference_count") -> Counter[str]:
    """`metric` of the model, summed over every version and pod, by pool (read from each pod)."""
    counts: Counter[str] = Counter()
    core = client.CoreV1Api(sb.api)
    for pool in POOLS:
        selector = f"app.kubernetes.io/instance={pool},app.kubernetes.io/component=server"
        for pod in kube.ready_pods(core, ns, selector):
            with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8002/metrics", timeout=10) as resp:
                for line in resp.read().decode().splitlines():
                    if line.startswith(metric + "{") and f'model="{MODEL}"' in line:
                        counts[pool] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def router_failures(sb: Sandbox, ns: str, pool: str) -> int:
    """Requests the pool's router saw fail (tritonoperator_router_requests_total, outcome failure)."""
    total = 0
    core = client.CoreV1Api(sb.api)
    selector = f"app.kubernetes.io/instance={pool},app.kubernetes.io/component=server"
    for pod in kube.ready_pods(core, ns, selector):
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8002/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("tritonoperator_router_requests_total{") and 'outcome="failure"' in line:
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


def send(count: int, call: Callable[[], None], threads: int = 4) -> list[str]:
    """`count` calls over `threads` threads; the failures."""
    failures: list[str] = []
    per = count // threads

    def run() -> None:
        for _ in range(per):
            try:
                call()
            except Exception as exc:
                failures.append(str(exc))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    return failures


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def model_status(sb: Sandbox, ns: str) -> dict[str, Any]:
    return (get_cr(sb, ns, "tritonmodels", MODEL) or {}).get("status") or {}


def share(counts: Counter[str], pool: str) -> float:
    total = sum(counts.values())
    return 100.0 * counts[pool] / total if total else 0.0


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(sandbox: Sandbox) -> str:
    """The sandbox's Gateway (Contour + Envoy), up; the address clients dial."""
    return gw.up(sandbox.cfg, sandbox.cfg.kubeconfig, kubectl=str(sandbox.bin_dir / "kubectl"))


@pytest.fixture(scope="module")
def published(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("gateway")
    publish(sandbox, workdir, f"{MODEL}/1", ADDER_PY, 1)
    publish(sandbox, workdir, f"{MODEL}/2-failing", FAILING_PY, 2)


@pytest.fixture
def pools(
    sandbox: Sandbox, operator: Operator, gateway: str, published: None, namespace: str
) -> Iterator[str]:
    """Two 1-replica TritonServers with different Triton image tags, each exposed through the Gateway."""
    apply(sandbox, namespace, credentials_secret(), *(pool_server(p) for p in POOLS))
    for pool in POOLS:
        sandbox.kubectl(
            "wait", "-n", namespace, "--for=condition=Ready", f"tritonserver/{pool}", "--timeout=240s"
        )
    yield namespace


# -- tests --------------------------------------------------------------------------------------------
def test_a_model_split_90_10_across_servers_through_the_gateway(
    sandbox: Sandbox, gateway: str, pools: str
) -> None:
    ns = pools
    # Each server's own routes are accepted by the gateway, and it says so.
    for pool in POOLS:
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Routed", f"tritonserver/{pool}", "--timeout=60s")
    servers = {"servers": [{"name": "pool-a", "weight": 90}, {"name": "pool-b", "weight": 10}]}
    apply(sandbox, ns, split_model(sandbox, ns, "pool-a", experiment=servers))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=300s")
    # One copy per server, each Ready there, owned by the model.
    for pool in POOLS:
        copy = get_cr(sandbox, ns, "tritonmodels", f"{MODEL}-on-{pool}") or {}
        assert condition(copy.get("status") or {}, "Ready").get("status") == "True", copy.get("status")
        assert copy["metadata"]["ownerReferences"][0]["name"] == MODEL
    assert condition(model_status(sandbox, ns), "Routed").get("status") == "True"

    def window_open() -> bool:  # the operator's window of these weights has begun (requests counted)
        entries = model_status(sandbox, ns).get("traffic") or []
        return len(entries) == 2 and all("requests" in e for e in entries)

    wait_for("the operator's traffic window", window_open, 60)
    host = host_of(ns)
    for proto, call in (("http", lambda: http_infer(gateway, host)), ("grpc", grpc_caller(gateway, host))):
        before = pool_counts(sandbox, ns)
        failures = send(2000, call)
        after = pool_counts(sandbox, ns)
        delta = after - before
        assert failures == [], f"{proto}: {len(failures)} failed, first {failures[:3]}"
        assert sum(delta.values()) == 2000, (proto, delta)
        assert abs(share(delta, "pool-b") - 10.0) <= 2.0, (proto, delta)

    # Status shows each server's observed share from its Triton's counters (the operator's window).
    def observed() -> dict[str, float] | None:
        entries = {e.get("server"): e for e in model_status(sandbox, ns).get("traffic") or []}
        if sum(e.get("requests", 0) for e in entries.values()) >= 4000:  # both runs are in the window
            return {p: entries[p]["observedShare"] for p in POOLS}
        return None

    shares = wait_for("observed shares in status.traffic", observed, 60)
    assert abs(shares["pool-b"] - 10.0) <= 2.0 and abs(shares["pool-a"] - 90.0) <= 2.0, shares
    traffic = {e["server"]: e for e in model_status(sandbox, ns)["traffic"]}
    assert (traffic["pool-a"]["desiredWeight"], traffic["pool-b"]["desiredWeight"]) == (90, 10)

    # The route is the operator's, with the weights of the spec; nothing was written to spec.
    route = sandbox.kubectl("get", "-n", ns, "httproute", f"model-{MODEL}", "-o", "json").stdout
    weights = {b["name"]: b["weight"] for b in json.loads(route)["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"pool-a": 90, "pool-b": 10}
    model = get_cr(sandbox, ns, "tritonmodels", MODEL) or {}
    assert model["spec"]["experiment"] == servers
    # kubectl get shows each copy's server, the model it is a copy of and its share; no canary.
    listed = sandbox.kubectl(
        "get", "-n", ns, "tritonmodels", "-l", f"tritonoperator.dev/split-of={MODEL}"
    ).stdout
    rows = {row["NAME"]: row for row in kubectl_table(listed)}
    for pool, percent in (("pool-a", "90"), ("pool-b", "10")):
        row = rows[f"{MODEL}-on-{pool}"]
        shown = (row["SERVER"], row["SPLIT-OF"], row["SHARE"], row["CANARY"])
        assert shown == (pool, MODEL, percent, ""), listed

    # A pool scaled to zero gets weight 0 before its pods go; clients see no failure beyond in-flight ones.
    load = GatewayLoad(gateway, host_of(ns)).start()
    try:
        time.sleep(3)
        sandbox.kubectl("scale", "-n", ns, "tritonserver/pool-b", "--replicas=0")

        def zeroed() -> bool:
            route = json.loads(
                sandbox.kubectl("get", "-n", ns, "httproute", f"model-{MODEL}", "-o", "json").stdout
            )
            weights = {b["name"]: int(b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]}
            return weights["pool-b"] == 0

        wait_for("pool-b's weight 0", zeroed, 30, 0.2)
        time.sleep(5)
    finally:
        load.finish()
    print(f"scale to 0 under load: {dict(load.ok)} ok, {len(load.failed)} failed {load.failed[:3]}")
    assert sum(load.ok.values()) > 100
    # The pool keeps its pods until the route gives it nothing (the server waits for the model's
    # route), so no request fails, not even one in flight.
    assert load.failed == [], load.failed[:5]
    ready = condition(model_status(sandbox, ns), "Ready")
    assert ready.get("status") == "False" and "pool-b" in ready.get("message", ""), ready


def test_a_canary_across_servers_promotes_and_a_failing_one_rolls_back(
    sandbox: Sandbox, gateway: str, pools: str
) -> None:
    ns = pools
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 30, "pauseSeconds": 6}, {"weight": 60, "pauseSeconds": 6}],
        "analysis": {"intervalSeconds": 5, "minRequests": 20, "maxFailureRatio": 0.05},
    }
    apply(sandbox, ns, split_model(sandbox, ns, "pool-a", rollout=rollout))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=300s")
    load = GatewayLoad(gateway, host_of(ns)).start()
    try:
        time.sleep(2)
        # Move the model to the pool with the other Triton image, step by step.
        apply(sandbox, ns, split_model(sandbox, ns, "pool-b", rollout=rollout))

        def promoted() -> bool:
            r = model_status(sandbox, ns).get("rollout") or {}
            return r.get("canaryServer") == "pool-b" and r.get("stableServer") == "pool-b"

        wait_for("the canary on pool-b promoted and pool-a's copy retired", promoted, 240)
        time.sleep(3)
    finally:
        load.finish()
    assert load.failed == [], f"{len(load.failed)} failed during the promotion: {load.failed[:3]}"
    assert sum(load.ok.values()) > 200
    wait_for(
        "pool-a's copy gone", lambda: get_cr(sandbox, ns, "tritonmodels", f"{MODEL}-on-pool-a") is None, 60
    )
    seen = [(e.type, e.reason, e.message) for e in events(sandbox, ns, MODEL)]
    reasons = [reason for _, reason, _ in seen]
    assert "CanaryStarted" in reasons and "RolloutComplete" in reasons, seen
    # Normal progress is never a Warning.
    assert not [w for w in seen if w[0] == "Warning"], seen

    # A new version on the other pool that fails 20% of its requests: rolled back to weight 0 by itself.
    failing = split_model(sandbox, ns, "pool-a", rollout=rollout, version=2)
    failing["spec"]["source"]["s3"]["prefix"] = f"{MODEL}/2-failing"
    load = GatewayLoad(gateway, host_of(ns)).start()
    try:
        apply(sandbox, ns, failing)

        def rolled_back() -> dict[str, Any] | None:
            r = model_status(sandbox, ns).get("rollout") or {}
            return r if r.get("phase") == "RolledBack" and r.get("canaryServer") == "pool-a" else None

        rollout_status = wait_for("the failing canary rolled back", rolled_back, 240)
        before = pool_counts(sandbox, ns, "nv_inference_request_success")
        time.sleep(4)
        after = pool_counts(sandbox, ns, "nv_inference_request_success")
    finally:
        load.finish()
    assert rollout_status["canaryWeight"] == 0
    # After the rollback the failing pool gets nothing; the stable one serves on.
    assert (after - before)["pool-a"] == 0 and (after - before)["pool-b"] > 0, (before, after)
    degraded = condition(model_status(sandbox, ns), "Degraded")
    assert degraded.get("status") == "True" and degraded.get("reason") == "RolledBack", degraded
    # Every failed request was one the failing version itself answered with its error: as many as the
    # pool's router counted (Triton's own request counters do not count error responses).
    refused = router_failures(sandbox, ns, "pool-a")
    assert 0 < len(load.failed) == refused, (len(load.failed), refused, load.failed[:3])
    grpc_failures = [f for f in load.failed if f.startswith("grpc")]
    assert all("version 2 is broken" in f for f in grpc_failures), grpc_failures[:3]
    assert all("500" in f for f in load.failed if f.startswith("http")), load.failed[:3]


def test_rolling_a_server_behind_the_gateway_fails_no_request(
    sandbox: Sandbox, operator: Operator, gateway: str, published: None, namespace: str
) -> None:
    """A server spec change rolls its pods one by one. Behind the Service (L4) a request in flight on a
    connection to a removed pod fails when its Triton closes it (README); the Gateway picks a ready pod
    per request and stops sending to a terminating one, and a new pod is Ready only with its models."""
    ns = namespace
    apply(sandbox, ns, credentials_secret(), pool_server("pool-a", replicas=2))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/pool-a", "--timeout=240s")
    apply(sandbox, ns, split_model(sandbox, ns, "pool-a"))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=300s")
    core = client.CoreV1Api(sandbox.api)
    selector = "app.kubernetes.io/instance=pool-a,app.kubernetes.io/component=server"
    before = {p.metadata.uid for p in core.list_namespaced_pod(ns, label_selector=selector).items}
    load = GatewayLoad(gateway, host_of(ns)).start()
    try:
        time.sleep(3)
        patch = json.dumps({"spec": {"env": [{"name": "ROLL", "value": "1"}]}})
        sandbox.kubectl("patch", "-n", ns, "tritonserver/pool-a", "--type=merge", "-p", patch)

        def rolled() -> bool:
            pods = kube.ready_pods(core, ns, selector)
            replaced = len(pods) == 2 and not before & {p.metadata.uid for p in pods}
            server = get_cr(sandbox, ns, "tritonservers", "pool-a") or {}
            st = server.get("status") or {}
            current = st.get("observedGeneration") == server["metadata"]["generation"]
            return replaced and current and condition(st, "Ready").get("status") == "True"

        wait_for("both pods replaced and the server Ready", rolled, 240)
        time.sleep(3)
    finally:
        load.finish()
    print(f"roll behind the gateway: {dict(load.ok)} ok, {len(load.failed)} failed {load.failed[:3]}")
    assert sum(load.ok.values()) > 200
    assert load.failed == [], f"{len(load.failed)} failed during the roll: {load.failed[:3]}"


def test_a_route_the_gateway_cannot_take_is_a_false_condition_and_an_event(
    sandbox: Sandbox, operator: Operator, gateway: str, namespace: str
) -> None:
    ns = namespace
    apply(sandbox, ns, pool_server("pool-x", replicas=0, parent={"name": "no-such-gateway"}))

    def refused() -> dict[str, Any] | None:
        status = (get_cr(sandbox, ns, "tritonservers", "pool-x") or {}).get("status") or {}
        cond = condition(status, "Routed")
        return cond if cond.get("status") == "False" else None

    cond = wait_for("Routed=False", refused, 60)
    assert cond["reason"] == "GatewayNotFound" and f"{ns}/no-such-gateway" in cond["message"], cond
    warnings = [
        e for e in events(sandbox, ns, "pool-x") if e.type == "Warning" and e.reason == "GatewayNotFound"
    ]
    assert warnings, [(e.type, e.reason) for e in events(sandbox, ns, "pool-x")]
    # A Gateway that exists but whose listener does not allow the route: the gateway's own words.
    apply(
        sandbox,
        ns,
        pool_server(
            "pool-x",
            replicas=0,
            parent={"name": gw.GATEWAY_NAME, "namespace": gw.GATEWAY_NAMESPACE, "sectionName": "nope"},
        ),
    )

    def gateway_said() -> dict[str, Any] | None:
        status = (get_cr(sandbox, ns, "tritonservers", "pool-x") or {}).get("status") or {}
        cond = condition(status, "Routed")
        return cond if cond.get("status") == "False" and cond.get("reason") != "GatewayNotFound" else None

    cond = wait_for("the gateway's refusal", gateway_said, 60)
    assert "Accepted=False on Gateway" in cond["message"], cond
    print(f"refused by Contour: {cond['reason']}: {cond['message']}")
    # Back to a valid parentRef: accepted.
    apply(sandbox, ns, pool_server("pool-x", replicas=0))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Routed", "tritonserver/pool-x", "--timeout=60s")


def test_bad_splits_are_refused_at_admission_or_named_in_a_condition(
    sandbox: Sandbox, operator: Operator, gateway: str, namespace: str
) -> None:
    ns = namespace
    apply(sandbox, ns, credentials_secret(), pool_server("pool-a", replicas=0))

    def refused(model: dict[str, Any]) -> str:
        proc = sandbox.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(model), check=False)
        assert proc.returncode != 0, "admitted"
        return proc.stderr

    bad_sum = split_model(
        sandbox,
        ns,
        "pool-a",
        experiment={"servers": [{"name": "pool-a", "weight": 90}, {"name": "pool-b", "weight": 20}]},
    )
    assert "spec.experiment.servers weights must sum to 100" in refused(bad_sum)
    other_ns = split_model(
        sandbox,
        ns,
        "pool-a",
        experiment={
            "servers": [
                {"name": "pool-a", "weight": 50},
                {"name": "pool-b", "namespace": "other", "weight": 50},
            ]
        },
    )
    assert 'unknown field "spec.experiment.servers[1].namespace"' in refused(other_ns)
    no_gateway = split_model(
        sandbox,
        ns,
        "pool-a",
        experiment={"servers": [{"name": "pool-a", "weight": 50}, {"name": "pool-b", "weight": 50}]},
    )
    del no_gateway["spec"]["gateway"]
    assert "set spec.gateway" in refused(no_gateway)
    # A server that does not exist: admitted (it may come later), and named in the model's conditions.
    missing = split_model(
        sandbox,
        ns,
        "pool-a",
        experiment={"servers": [{"name": "pool-a", "weight": 50}, {"name": "ghost", "weight": 50}]},
    )
    apply(sandbox, ns, missing)

    def named() -> dict[str, Any] | None:
        cond = condition(model_status(sandbox, ns), "Ready")
        return cond if cond.get("reason") == "ServerNotFound" else None

    cond = wait_for("ServerNotFound", named, 60)
    assert "TritonServer ghost does not exist" in cond["message"], cond
    # Never a route to a Service that does not exist.
    route = json.loads(sandbox.kubectl("get", "-n", ns, "httproute", f"model-{MODEL}", "-o", "json").stdout)
    assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == ["pool-a"]
