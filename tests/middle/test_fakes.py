"""The fakes the middle tier stands on behave as the real things do where a pass can tell."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from triton_operator.observe.staging import staging_outcome
from triton_operator.render.labels import JOB_NAME_LABEL
from triton_operator.triton import client as triton
from triton_operator.triton.metrics import fetch_metrics, parse_metrics

from tests.support.fakekube import FakeKube
from tests.support.faketriton import GOLDEN, Repository, TritonPool
from tests.support.kubesemantics import condition_of, matches

pytestmark = pytest.mark.unit
LABELS = {"app": "triton", "tier": "gpu"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, True),
        ("app=triton", True),
        ("app==triton,tier=gpu", True),
        ("app=other", False),
        ("app!=other", True),
        ("app in (a, triton)", True),
        ("tier notin (gpu)", False),
        ("tier", True),
        ("!tier", False),
        ("missing", False),
        ("app=triton,missing", False),
    ],
)
def test_label_selectors(selector: str | None, expected: bool) -> None:
    assert matches(selector, LABELS) is expected


def deployment(replicas: int = 1, image: str = "triton:1") -> dict[str, object]:
    template = {
        "metadata": {"labels": LABELS},
        "spec": {"containers": [{"name": "tritonserver", "image": image}]},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"replicas": replicas, "template": template},
        "status": {"replicas": 99},
    }


def test_generation_moves_with_the_spec_and_resource_version_with_every_write() -> None:
    kube = FakeKube()
    created = kube.apply(deployment())
    assert created["metadata"]["generation"] == 1 and "status" not in created  # apply ignores status
    same = kube.apply(deployment())
    assert same["metadata"]["generation"] == 1
    changed = kube.apply(deployment(image="triton:2"))
    assert changed["metadata"]["generation"] == 2
    status = kube.patch_status("Deployment", "ns", "d", {"replicas": 1})
    assert status["metadata"]["generation"] == 2 and status["status"] == {"replicas": 1}
    versions = [int(o["metadata"]["resourceVersion"]) for o in (created, changed, status)]
    assert versions == sorted(set(versions))
    assert [(c.verb, c.created) for c in kube.calls] == [
        ("apply", True), ("apply", False), ("apply", False), ("status", False)
    ]  # fmt: skip
    with pytest.raises(ApiException) as missing:
        kube.patch_status("Deployment", "ns", "gone", {})
    assert missing.value.status == 404
    kube.refusals["Deployment"] = ApiException(status=422, reason="Invalid")
    with pytest.raises(ApiException) as refused:
        kube.apply(deployment(image="triton:3"))
    assert refused.value.status == 422 and kube.calls[-1].verb == "refused"


def test_deleting_an_owner_collects_its_dependents_and_a_job_gets_its_pod() -> None:
    kube = FakeKube()
    job = kube.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"},
                      "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}})  # fmt: skip
    pods = kube.list("Pod", "ns", f"{JOB_NAME_LABEL}=j,a=b")
    assert len(pods) == 1 and pods[0]["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert staging_outcome(job, pods).phase == "running"
    done = kube.complete_job("ns", "j", digest="sha256:abc")
    outcome = staging_outcome(done, kube.list("Pod", "ns", f"{JOB_NAME_LABEL}=j"))
    assert (outcome.phase, outcome.digest) == ("complete", "sha256:abc")
    kube.delete("Job", "ns", "j")
    assert kube.list("Pod", "ns") == []
    kube.delete("Job", "ns", "j")  # gone already: no error, as the operator's Kube


def test_a_pod_is_ready_only_once_its_readiness_gates_are_true() -> None:
    kube = FakeKube()
    dep = deployment(replicas=2)
    dep["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": "example.com/gate"}]
    kube.apply(dep)
    pods = kube.sync_deployment("ns", "d")
    assert len(pods) == 2
    name = pods[0]["metadata"]["name"]
    started = kube.start_pod("ns", name, "127.34.0.1")
    assert (condition_of(started, "ContainersReady") or {})["status"] == "True"
    assert (condition_of(started, "Ready") or {})["status"] == "False"
    kube.patch_pod_condition("ns", name, {"type": "example.com/gate", "status": "True"})
    assert (condition_of(kube.get("Pod", "ns", name) or {}, "Ready") or {})["status"] == "True"
    assert (kube.get("Deployment", "ns", "d") or {})["status"]["readyReplicas"] == 1
    new = kube.roll_deployment("ns", "d")
    assert {p["metadata"]["name"] for p in kube.list("Pod", "ns")} == {p["metadata"]["name"] for p in new}


@pytest.fixture
def pool() -> Iterator[TritonPool]:
    tritons = TritonPool()
    yield tritons
    tritons.stop_all()


def test_fake_triton_metrics_are_the_captured_answer_of_triton(pool: TritonPool) -> None:
    """Loaded `adder` version 1 with no traffic: line for line the captured idle answer of Triton 2.51
    (less its other model)."""
    repository = Repository()
    repository.stage("adder", 1)
    fake = pool.start(repository)
    endpoint = triton.TritonEndpoint(fake.ip)
    triton.load_model(endpoint, "adder")
    golden = [line for line in Path(GOLDEN).read_text().splitlines() if 'model="failing"' not in line]
    assert fetch_metrics(endpoint).splitlines() == golden
    fake.serve("adder", 1, 8, 2, latency_us=1000)
    counters = parse_metrics(fetch_metrics(endpoint)).models[("adder", "1")]
    assert (counters.success_count, counters.failure_count, counters.request_p99_us) == (8, 2, 1000)


def test_fake_triton_loads_as_triton_does(pool: TritonPool) -> None:
    repository = Repository()
    fake = pool.start(repository)
    endpoint = triton.TritonEndpoint(fake.ip)
    with pytest.raises(triton.TritonLoadError, match="failed to poll from model repository"):
        triton.load_model(endpoint, "m")
    repository.stage("m", 1)
    assert triton.repository_index(endpoint) == [triton.ModelState("m", None, None, None)]
    triton.load_model(endpoint, "m")
    repository.stage("m", 2)
    repository.broken[("m", 2)] = "version 2 is broken"
    with pytest.raises(triton.TritonLoadError, match="version 2 is broken"):
        triton.load_model(endpoint, "m")
    assert triton.model_ready(endpoint, "m", 1) and not triton.model_ready(endpoint, "m", 2)  # kept
    router = triton.model_config(endpoint, "m") | {"name": "public"}
    triton.load_model(endpoint, "public", config_json=json.dumps(router), files={"file:1/model.py": b""})
    assert [row.name for row in triton.repository_index(endpoint)] == ["m"]  # files= loads are not indexed
    assert triton.model_ready(endpoint, "public")
    triton.unload_model(endpoint, "m")
    assert triton.repository_index(endpoint)[0].reason == "unloaded"
    fake.restart()
    assert not triton.model_ready(endpoint, "public")
    assert fake.loads == [("m", False), ("m", False), ("m", False), ("public", True)]
    assert fake.unloads == ["m"]
