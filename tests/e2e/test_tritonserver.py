"""TritonServer end to end (issue 3): what an SRE sees with kubectl, on a real cluster and real Triton."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any, cast

import pytest
from kubernetes import client

from sandbox.config import REPO_ROOT
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.support.objects import runner_pids, triton_restarts

EXAMPLE = REPO_ROOT / "examples" / "quickstart" / "tritonserver.yaml"
GROUP, VERSION, PLURAL = "tritonoperator.dev", "v1alpha1", "tritonservers"


def server(sb: Sandbox, ns: str, name: str = "triton") -> dict[str, Any]:
    obj = client.CustomObjectsApi(sb.api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return cast(dict[str, Any], obj)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), {})


def wait_ready(sb: Sandbox, ns: str, name: str = "triton", timeout: int = 150) -> None:
    """What a user runs: kubectl wait, which waits for the current generation's Ready."""
    sb.kubectl("wait", "-n", ns, f"tritonserver/{name}", "--for=condition=Ready", f"--timeout={timeout}s")


def apply_yaml(sb: Sandbox, ns: str, text: str) -> None:
    sb.kubectl("apply", "-n", ns, "-f", "-", input=text)


def events(sb: Sandbox, ns: str, name: str = "triton") -> list[Any]:
    items = client.CoreV1Api(sb.api).list_namespaced_event(ns).items
    return [e for e in items if e.involved_object.kind == "TritonServer" and e.involved_object.name == name]


def test_example_becomes_ready_and_reports_its_pods(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    history = kube.ConditionHistory(sandbox.api, GROUP, VERSION, PLURAL, namespace, "triton")
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_ready(sandbox, namespace)
    seen = history.stop()
    # Regression: a fresh deploy said Degraded=True "unbound immediate PersistentVolumeClaims" for about a
    # second while its new PVC was provisioned, and Warning-ed ReplicasNotReady while its pods started
    # (Argo CD's health reads Degraded first: notifications fired, sync waves failed).
    assert "True" not in history.statuses("Degraded"), seen
    warnings = [f"{e.reason}: {e.message}" for e in events(sandbox, namespace) if e.type == "Warning"]
    assert not warnings, warnings

    obj = server(sandbox, namespace)
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in status["conditions"])
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Available": "True",
        "Progressing": "False",
        "Degraded": "False",
        # What kstatus (Flux, kpt) reads: neither reconciling nor stalled is Current.
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    core = client.CoreV1Api(sandbox.api)
    pods = {
        p.metadata.name: p
        for p in core.list_namespaced_pod(namespace, label_selector=status["selector"]).items
    }
    assert sorted(p["name"] for p in status["pods"]) == sorted(str(n) for n in pods)
    for entry in status["pods"]:
        assert entry["ready"] is True
        assert entry["ip"] == pods[entry["name"]].status.pod_ip
        # The version Triton itself reports on that pod's IP.
        with urllib.request.urlopen(f"http://{entry['ip']}:8000/v2", timeout=3) as resp:
            assert entry["tritonVersion"] == json.load(resp)["version"]
    assert status["endpoints"]["http"] == f"triton.{namespace}.svc:8000"
    assert status["endpoints"]["grpc"] == f"triton.{namespace}.svc:8001"

    table = sandbox.kubectl("get", "-n", namespace, "tritonservers").stdout
    assert table.split("\n")[1].split()[:4] == ["triton", "True", "2", "2"]
    svc = core.read_namespaced_service("triton", namespace)
    assert {p.name: p.port for p in svc.spec.ports} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    # The Service works as in a cluster: its EndpointSlices list the ready pods' IPs, and a client
    # calling its ClusterIP reaches Triton.
    ready_ips: set[str] = {str(p.status.pod_ip) for p in pods.values()}
    kube.wait_for(
        lambda: kube.endpoint_slice_ips(sandbox.api, namespace, "triton") == ready_ips,
        15,
        f"the Service's EndpointSlices to list {sorted(ready_ips)}",
    )

    def through_service() -> Any:
        try:
            with urllib.request.urlopen(f"http://{svc.spec.cluster_ip}:8000/v2", timeout=3) as resp:
                return json.load(resp)
        except OSError:  # kube-proxy has not programmed the new endpoints yet
            return None

    assert (
        kube.wait_for(through_service, 10, "the ClusterIP to answer")["version"]
        == (status["pods"][0]["tritonVersion"])
    )
    warnings = [
        f"{e.reason}: {e.message}"
        for e in core.list_event_for_all_namespaces().items
        if e.reason == "FailedToUpdateEndpointSlices" or "loopback" in (e.message or "")
    ]
    assert not warnings, warnings[:3]
    pdb = client.PolicyV1Api(sandbox.api).read_namespaced_pod_disruption_budget("triton", namespace)
    assert pdb.spec.max_unavailable == 1
    assert any(e.reason == "AllReplicasReady" for e in events(sandbox, namespace))


def test_wait_follows_the_new_generation_and_kubectl_scale_works(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_ready(sandbox, namespace)
    before = {p.metadata.uid for p in client.CoreV1Api(sandbox.api).list_namespaced_pod(namespace).items}

    # A spec change that replaces the pods; kubectl wait right after must wait for the NEW generation.
    sandbox.kubectl(
        "patch",
        "-n",
        namespace,
        "tritonserver/triton",
        "--type=merge",
        "-p",
        '{"spec": {"podAnnotations": {"example.com/rev": "2"}}}',
    )
    wait_ready(sandbox, namespace)
    obj = server(sandbox, namespace)
    assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 2
    assert condition(obj, "Ready")["observedGeneration"] == 2
    pods = (
        client.CoreV1Api(sandbox.api)
        .list_namespaced_pod(namespace, label_selector=obj["status"]["selector"])
        .items
    )
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    assert len(live) == 2 and not ({p.metadata.uid for p in live} & before)
    assert all(p.metadata.annotations.get("example.com/rev") == "2" for p in live)

    sandbox.kubectl("scale", "-n", namespace, "tritonserver/triton", "--replicas=3")
    kube.wait_for(
        lambda: (
            server(sandbox, namespace)["status"].get("readyReplicas") == 3
            and condition(server(sandbox, namespace), "Ready").get("status") == "True"
        ),
        120,
        "3 ready replicas after kubectl scale",
    )
    assert len(server(sandbox, namespace)["status"]["pods"]) == 3
    scale = sandbox.kubectl(
        "get", "-n", namespace, "tritonserver/triton", "--subresource=scale", "-o", "json"
    )
    assert json.loads(scale.stdout)["status"]["replicas"] == 3


def test_a_killed_triton_turns_ready_false_and_back(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_ready(sandbox, namespace)
    victim, pid = sorted(runner_pids(sandbox, namespace).items())[0]
    seen = {e.metadata.name for e in events(sandbox, namespace)}

    os.kill(pid, signal.SIGKILL)
    ready_false = kube.wait_for(
        lambda: next(
            (
                e
                for e in events(sandbox, namespace)
                if e.metadata.name not in seen and e.reason == "ReplicasNotReady"
            ),
            None,
        ),
        60,
        "a new ReplicasNotReady event after the kill",
    )
    assert ready_false.type == "Warning" and victim in ready_false.message
    core = client.CoreV1Api(sandbox.api)
    kube.wait_for(
        lambda: triton_restarts(core.read_namespaced_pod(victim, namespace)) == 1,
        30,
        "the pod to report one container restart, as a kubelet would",
    )
    kube.wait_for(
        lambda: (
            condition(server(sandbox, namespace), "Ready").get("status") == "True"
            and next(p for p in server(sandbox, namespace)["status"]["pods"] if p["name"] == victim)["ready"]
        ),
        90,
        "Ready to come back once the container restarted",
    )


def test_broken_triton_startup_surfaces_tritons_own_error_and_recovers(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_ready(sandbox, namespace)
    # Ask Triton to load a model that is not in the repository: it exits at startup saying so.
    sandbox.kubectl(
        "patch",
        "-n",
        namespace,
        "tritonserver/triton",
        "--type=merge",
        "-p",
        '{"spec": {"triton": {"extraArgs": ["--load-model=no-such-model"]}}}',
    )
    ready = kube.wait_for(
        lambda: (c := condition(server(sandbox, namespace), "Ready")).get("reason") == "CrashLooping" and c,
        120,
        "Ready=False with reason CrashLooping",
    )
    assert ready["status"] == "False"
    # Triton's own words, from its last log lines (what a kubelet keeps of a failed container)
    assert "failed to load all models" in ready["message"]
    degraded = condition(server(sandbox, namespace), "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "CrashLooping"
    # Still serving with the old pods meanwhile: one GPU pod at a time is replaced.
    assert condition(server(sandbox, namespace), "Available")["status"] == "True"

    sandbox.kubectl(
        "patch",
        "-n",
        namespace,
        "tritonserver/triton",
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/triton/extraArgs"}]',
    )
    wait_ready(sandbox, namespace)
    assert condition(server(sandbox, namespace), "Degraded")["status"] == "False"


def resource_versions(sb: Sandbox, ns: str) -> dict[str, Any]:
    core, apps = client.CoreV1Api(sb.api), client.AppsV1Api(sb.api)
    policy = client.PolicyV1Api(sb.api)
    return {
        "tritonserver": server(sb, ns)["metadata"]["resourceVersion"],
        "deployment": apps.read_namespaced_deployment("triton", ns).metadata.resource_version,
        "service": core.read_namespaced_service("triton", ns).metadata.resource_version,
        "pvc": core.read_namespaced_persistent_volume_claim("triton-models", ns).metadata.resource_version,
        "pdb": policy.read_namespaced_pod_disruption_budget("triton", ns).metadata.resource_version,
    }


def test_no_writes_at_steady_state(sandbox: Sandbox, operator: Operator, namespace: str) -> None:
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_ready(sandbox, namespace)
    kube.wait_for(
        lambda: all(p.get("ready") for p in server(sandbox, namespace)["status"]["pods"]),
        30,
        "status to settle",
    )
    time.sleep(5)
    before = resource_versions(sandbox, namespace)
    time.sleep(60)  # 20 status periods of the test operator (3 s)
    assert resource_versions(sandbox, namespace) == before


def test_delete_removes_children_and_keeps_the_model_volume(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    apply_yaml(
        sandbox,
        namespace,
        """
apiVersion: tritonoperator.dev/v1alpha1
kind: TritonServer
metadata: {name: scratch}
spec: {replicas: 1, modelRepository: {size: 1Gi, retainOnDelete: false}}
""",
    )
    wait_ready(sandbox, namespace)
    wait_ready(sandbox, namespace, "scratch")
    sandbox.kubectl(
        "delete",
        "-n",
        namespace,
        "tritonserver/triton",
        "tritonserver/scratch",
        "--wait=true",
        "--timeout=60s",
    )
    core, apps = client.CoreV1Api(sandbox.api), client.AppsV1Api(sandbox.api)
    kube.wait_for(
        lambda: (
            not apps.list_namespaced_deployment(namespace).items
            and not core.list_namespaced_service(namespace).items
            and not client.PolicyV1Api(sandbox.api).list_namespaced_pod_disruption_budget(namespace).items
        ),
        60,
        "the Deployments, Services and PDB to be garbage-collected",
    )
    kube.wait_for(
        lambda: (
            [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(namespace).items]
            == ["triton-models"]
        ),
        60,
        "only the retained PVC to remain",
    )


@pytest.mark.alone  # stops the operator every test shares
def test_deleting_a_server_never_waits_for_the_operator(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    """No finalizer on a TritonServer: uninstalling the operator first (an Argo CD app deleted whole)
    must not leave servers stuck; their children go by garbage collection."""
    sandbox.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    wait_ready(sandbox, namespace)
    assert not server(sandbox, namespace)["metadata"].get("finalizers")
    operator.stop()
    try:
        sandbox.kubectl("delete", "-n", namespace, "tritonserver/triton", "--timeout=30s")
        apps = client.AppsV1Api(sandbox.api)
        kube.wait_for(
            lambda: not apps.list_namespaced_deployment(namespace).items,
            60,
            "the Deployment to be garbage-collected",
        )
    finally:
        operator.start()


@pytest.mark.parametrize(
    ("patch", "field", "needle"),
    [
        ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
        ({"resources": {"gpus": 0}}, "spec.resources.gpus", "greater than or equal to 1"),
        ({"resources": {"gpus": 64}}, "spec.resources.gpus", "less than or equal to 16"),
        ({"triton": {"modelControlMode": "sometimes"}}, "spec.triton.modelControlMode", "Unsupported value"),
        ({"modelRepository": {"size": "ten gigs"}}, "spec.modelRepository.size", "should match"),
    ],
    ids=["negative-replicas", "zero-gpus", "absurd-gpus", "unknown-control-mode", "malformed-quantity"],
)
def test_bad_specs_are_rejected_at_admission_with_the_field(
    sandbox: Sandbox, crds: None, namespace: str, patch: dict[str, Any], field: str, needle: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TritonServer",
        "metadata": {"name": "bad"},
        "spec": patch,
    }
    result = sandbox.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert field in result.stderr and needle in result.stderr, result.stderr


def test_missing_secret_and_unschedulable_gpus_are_conditions_not_crashes(
    sandbox: Sandbox, operator: Operator, namespace: str
) -> None:
    apply_yaml(
        sandbox,
        namespace,
        """
apiVersion: tritonoperator.dev/v1alpha1
kind: TritonServer
metadata: {name: needs-secret}
spec: {replicas: 1, envFrom: [{secretRef: {name: ngc-credentials}}]}
---
apiVersion: tritonoperator.dev/v1alpha1
kind: TritonServer
metadata: {name: too-big}
spec: {replicas: 1, resources: {gpus: 16}}
""",
    )
    secret = kube.wait_for(
        lambda: (
            (c := condition(server(sandbox, namespace, "needs-secret"), "Ready")).get("reason")
            == "MissingReference"
            and c
        ),
        90,
        "Ready=False MissingReference",
    )
    assert 'secret "ngc-credentials" not found' in secret["message"]
    gpus = kube.wait_for(
        lambda: (
            (c := condition(server(sandbox, namespace, "too-big"), "Ready")).get("reason") == "Unschedulable"
            and c
        ),
        90,
        "Ready=False Unschedulable",
    )
    assert "Insufficient nvidia.com/gpu" in gpus["message"]
    time.sleep(6)  # two status periods: whatever the first observations had to say is said
    events_while_stuck = len(events(sandbox, namespace, "too-big"))

    # Fixing the cause is all it takes: create the Secret.
    client.CoreV1Api(sandbox.api).create_namespaced_secret(
        namespace, {"metadata": {"name": "ngc-credentials"}, "stringData": {"NGC_API_KEY": "x"}}
    )
    wait_ready(sandbox, namespace, "needs-secret", timeout=120)
    # Waiting on the scheduler is not a crash loop: while nothing changes, no new events, and the
    # operator is still the same process.
    time.sleep(6)
    assert len(events(sandbox, namespace, "too-big")) == events_while_stuck
    assert condition(server(sandbox, namespace, "too-big"), "Ready")["reason"] == "Unschedulable"
    assert operator.running()


def test_operator_exposes_liveness_and_its_own_metrics(sandbox: Sandbox, operator: Operator) -> None:
    with urllib.request.urlopen(operator.metrics_url, timeout=3) as resp:
        text = resp.read().decode()
    assert "triton_operator_reconcile_total" in text
    assert "triton_operator_reconcile_duration_seconds_bucket" in text
