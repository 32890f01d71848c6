"""Switching a live model between direct and routed on the sandbox (issue 18, point 7): direct, then a
canary (its router in front of `<name>~versions`), then direct again, while clients call it through the
server's Service. Not one request fails, and at the end every pod's Triton lists as loaded only what the
spec wants: the model itself, no router and no versions behind one.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.load import Load
from tests.support.objects import apply, condition, credentials_secret, get_cr, server_pods, tritonserver
from tests.support.scorer import MODEL, canary_model, publish

pytestmark = pytest.mark.e2e

VERSIONS = f"{MODEL}~versions"
CANARY = {"strategy": "Canary", "steps": [{"weight": 100}]}
IMMEDIATE = {"strategy": "Immediate"}


def loaded(ip: str) -> set[str]:
    """The names the pod's Triton lists READY in its repository index (a router loaded from files is
    listed under its name only where a folder of that name exists)."""
    req = urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return {row["name"] for row in json.load(resp) if row.get("state") == "READY"}


def router_of(ip: str) -> bool:
    with urllib.request.urlopen(f"http://{ip}:8000/v2/models/{MODEL}/config", timeout=10) as resp:
        return "variants" in (json.load(resp).get("parameters") or {})


def is_routed(ip: str) -> bool:
    return router_of(ip) and VERSIONS in loaded(ip)


def is_direct(ip: str) -> bool:
    return loaded(ip) == {MODEL} and not router_of(ip)


def every_pod(ips: list[str], check: Callable[[str], bool]) -> bool:
    """Whether `check` holds on every pod (False while one does not answer)."""
    try:
        return all(check(ip) for ip in ips)
    except OSError:
        return False


def pod_ips(sb: Sandbox, ns: str) -> list[str]:
    return [p.status.pod_ip for p in server_pods(sb, ns)]


def settled(sb: Sandbox, ns: str) -> dict[str, Any] | None:
    """The model's status once its pass observed the current spec and it is Ready."""
    model = get_cr(sb, ns, "tritonmodels", MODEL) or {}
    status = model.get("status") or {}
    current = status.get("observedGeneration") == model["metadata"]["generation"]
    return status if current and condition(status, "Ready").get("status") == "True" else None


@pytest.fixture
def served(sandbox: Sandbox, operator: Operator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A namespace with a server of 2 replicas serving the model directly, version 1."""
    publish(sandbox, tmp_path_factory.mktemp("switch"), f"{MODEL}-switch/1", ADDER_PY, 1)
    core = client.CoreV1Api(sandbox.api)
    ns = f"sw-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    apply(sandbox, ns, credentials_secret(), tritonserver(2))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=180s")
    apply(sandbox, ns, canary_model(sandbox, 1, f"{MODEL}-switch/1", IMMEDIATE))
    kube.wait_for(lambda: settled(sandbox, ns), 240, "the model served directly")
    yield ns
    core.delete_namespace(ns)


def test_direct_to_routed_to_direct_under_load_leaves_only_the_model(sandbox: Sandbox, served: str) -> None:
    ns = served
    ips = pod_ips(sandbox, ns)
    assert len(ips) == 2 and all(loaded(ip) == {MODEL} for ip in ips)
    service_ip = kube.cluster_ip(client.CoreV1Api(sandbox.api), ns, "triton")
    load = Load([service_ip], max_s=480).start()  # one HTTP and one gRPC client, back to back
    try:
        apply(sandbox, ns, canary_model(sandbox, 1, f"{MODEL}-switch/1", CANARY))
        kube.wait_for(
            lambda: (
                settled(sandbox, ns) and every_pod(ips, lambda ip: router_of(ip) and VERSIONS in loaded(ip))
            ),
            240,
            "the model routed: its router in front of its versions on every pod",
        )
        routed = {ip: loaded(ip) for ip in ips}
        apply(sandbox, ns, canary_model(sandbox, 1, f"{MODEL}-switch/1", IMMEDIATE))
        kube.wait_for(
            lambda: (
                settled(sandbox, ns)
                and every_pod(ips, lambda ip: loaded(ip) == {MODEL} and not router_of(ip))
            ),
            240,
            "the model direct again on every pod, nothing else loaded",
        )
    finally:
        load.finish()
    assert all(names <= {MODEL, VERSIONS} for names in routed.values()), routed
    assert sum(load.ok.values()) > 0 and load.ok["http"] > 0 and load.ok["grpc"] > 0, load.ok
    assert load.failed == [], load.failed[:5]
    assert pod_ips(sandbox, ns) == ips, "the same pods throughout (nothing restarted to unload)"
    assert all(loaded(ip) == {MODEL} for ip in ips)
