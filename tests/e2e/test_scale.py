"""Many TritonModels at once (issue 8): more models than the operator has threads, all handled.

Before the loops were rebuilt, each model's daemon held one of 8 threads for life: the 9th model
was never staged, loaded or given a status, and deleting one hung on its finalizer.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from sandbox.mnist import publish_folder
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import infer_once, write_model
from tests.support.objects import (
    CREDENTIALS,
    apply,
    condition,
    credentials_secret,
    get_cr,
    server_pods,
    tritonmodel,
    tritonserver,
)

pytestmark = pytest.mark.e2e

MODELS = 50  # the operator runs 8 passes at once (TRITON_OPERATOR_WORKERS) and 4 kopf workers
PREFIX = "adder/1"


def models_in(sb: Sandbox, ns: str) -> list[dict[str, Any]]:
    api = client.CustomObjectsApi(sb.api)
    items = api.list_namespaced_custom_object("tritonoperator.dev", "v1alpha1", ns, "tritonmodels")["items"]
    return list(items)


def current_and(obj: dict[str, Any], ctype: str, status: str, reason: str | None = None) -> bool:
    """The status is about the object's latest spec and says `ctype`=`status` (with `reason`)."""
    st = obj.get("status") or {}
    cond = condition(st, ctype)
    return (
        st.get("observedGeneration") == obj["metadata"]["generation"]
        and cond.get("observedGeneration") == obj["metadata"]["generation"]
        and cond.get("status") == status
        and (reason is None or cond.get("reason") == reason)
    )


def ready_models(ip: str) -> set[str]:
    req = urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return {m["name"] for m in json.load(resp) if m.get("state") == "READY"}


@pytest.fixture(scope="module")
def adder_in_s3(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A small python model (adds one) published to s3://models/adder/1: cheap enough to load 100 times."""
    folder = write_model(tmp_path_factory.mktemp("adder"), "adder", max_queue_delay_us=0)
    publish_folder(sandbox.cfg.s3_endpoint, folder, PREFIX, CREDENTIALS)


@pytest.fixture
def scale_ns(sandbox: Sandbox, operator: Operator) -> Iterator[str]:
    core = client.CoreV1Api(sandbox.api)
    ns = f"scale-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    yield ns
    core.delete_namespace(ns)


def test_fifty_models_on_two_replicas_are_all_loaded_then_all_unloaded_on_delete(
    sandbox: Sandbox, scale_ns: str, adder_in_s3: None
) -> None:
    ns = scale_ns
    apply(sandbox, ns, credentials_secret(), tritonserver(2))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=180s")
    endpoint = sandbox.cfg.s3_endpoint
    names = [f"adder-{i:02d}" for i in range(MODELS)]
    apply(sandbox, ns, *(tritonmodel(name, endpoint, prefix=PREFIX) for name in names))

    def all_ready() -> bool:
        objs = models_in(sandbox, ns)
        return len(objs) == MODELS and all(current_and(o, "Ready", "True") for o in objs)

    kube.wait_for(all_ready, 600, f"all {MODELS} TritonModels Ready", interval_s=2)
    pods = server_pods(sandbox, ns)
    assert len(pods) == 2
    for pod in pods:
        assert ready_models(pod.status.pod_ip) >= set(names), f"pod {pod.metadata.name} lacks models"
    for obj in models_in(sandbox, ns):
        assert obj["status"]["loaded"] == "2/2", obj["status"]
    for name in names:  # each one answers on each replica
        for pod in pods:
            assert infer_once(f"{pod.status.pod_ip}:8000", name) is None

    sandbox.kubectl("delete", "-n", ns, "tritonmodels", "--all", "--wait=false")
    kube.wait_for(lambda: not models_in(sandbox, ns), 300, "every TritonModel gone (finalizers done)")
    for pod in pods:
        assert not ready_models(pod.status.pod_ip) & set(names), f"pod {pod.metadata.name} still serves"


def test_many_models_of_a_missing_server_all_say_so(sandbox: Sandbox, scale_ns: str) -> None:
    """The issue's first report: models of a server that does not exist; from the 8th on, none got a
    status (each earlier one's daemon held one of the operator's 8 threads for good), and deleting one
    hung on its finalizer. Applied in two waves, as users add models over time."""
    ns = scale_ns
    first = [f"orphan-a{i:02d}" for i in range(12)]
    second = [f"orphan-b{i:02d}" for i in range(12)]

    def all_say_server_not_found(names: list[str]) -> bool:
        objs = [o for o in models_in(sandbox, ns) if o["metadata"]["name"] in names]
        return len(objs) == len(names) and all(
            current_and(o, "Ready", "False", "ServerNotFound") for o in objs
        )

    apply(sandbox, ns, *(tritonmodel(name, sandbox.cfg.s3_endpoint) for name in first))
    kube.wait_for(lambda: all_say_server_not_found(first), 120, "the first 12: ServerNotFound", interval_s=1)
    apply(sandbox, ns, *(tritonmodel(name, sandbox.cfg.s3_endpoint) for name in second))
    kube.wait_for(lambda: all_say_server_not_found(second), 120, "12 more: ServerNotFound", interval_s=1)
    for obj in models_in(sandbox, ns):  # kopf keeps no copy of the spec in an annotation
        assert not [k for k in obj["metadata"].get("annotations") or {} if "last-handled" in k]
    sandbox.kubectl("delete", "-n", ns, f"tritonmodel/{first[0]}", "--timeout=60s")
    assert get_cr(sandbox, ns, "tritonmodels", first[0]) is None


def test_a_spec_larger_than_an_annotation_may_be_is_handled_and_kopf_keeps_no_copy(
    sandbox: Sandbox, scale_ns: str
) -> None:
    """The CRD admits config.parameters of 64 x 4,096 characters: more than all annotations may hold
    (256 KiB). kopf's default copy of the spec in an annotation would be refused and retried forever."""
    ns = scale_ns
    model = tritonmodel("large", sandbox.cfg.s3_endpoint)
    model["spec"]["config"] = {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [1]}],
        "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [1]}],
        "parameters": {f"p{i:02d}": "x" * 4096 for i in range(64)},
    }
    assert len(json.dumps(model["spec"])) > 256 * 1024
    api = client.CustomObjectsApi(sandbox.api)
    # Created through the API: `kubectl apply` itself could not keep its last-applied copy of it.
    api.create_namespaced_custom_object("tritonoperator.dev", "v1alpha1", ns, "tritonmodels", model)

    def handled() -> dict[str, Any] | None:
        obj = get_cr(sandbox, ns, "tritonmodels", "large")
        return obj if obj and current_and(obj, "Ready", "False", "ServerNotFound") else None

    obj = kube.wait_for(handled, 60, "the large model's status: ServerNotFound")
    kopf_keys = [k for k in obj["metadata"].get("annotations") or {} if "last-handled" in k]
    assert kopf_keys == []
    sandbox.kubectl("delete", "-n", ns, "tritonmodel/large", "--timeout=60s")
