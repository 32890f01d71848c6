"""On a real sandbox, a ReadWriteOnce volume is attached to one node at a time, as a real cluster's
network block storage (EBS, PD, Azure Disk) is (sandbox/attach.py): a Deployment's second pod on another
node waits in ContainerCreating with Kubernetes' Multi-Attach Event until the first has gone; pods on one
node share the volume; a ReadWriteMany volume is used on several nodes at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client

# Named here, it puts the module among the tests make test runs once the sandbox's builds are done
# (.ci/pytest_phases.py): they need a running sandbox.
from sandbox.config import ensure_binaries  # noqa: F401
from tests.e2e.conftest import Sandbox

T = TypeVar("T")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def namespace(sandbox: Sandbox) -> Iterator[str]:
    core = client.CoreV1Api(sandbox.api)
    name = f"attach-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 60) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def claim(core: client.CoreV1Api, namespace: str, mode: str) -> str:
    """A claim of the sandbox's default class; returns the name of the volume bound to it."""
    body = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Mi"}}},
    }
    core.create_namespaced_persistent_volume_claim(namespace, body)

    def bound() -> str | None:
        pvc = core.read_namespaced_persistent_volume_claim("data", namespace)
        return str(pvc.spec.volume_name) if pvc.status.phase == "Bound" else None

    return wait_for("the claim bound", bound, timeout_s=30)


def deployment(apps: client.AppsV1Api, namespace: str, placement: dict[str, Any]) -> None:
    """Two `pause` pods mounting the claim `data`, placed as `placement` (pod spec fields) says."""
    labels = {"app": "web"}
    spec = pod_spec(placement)
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
    apps.create_namespaced_deployment(namespace, body)


def pod_spec(placement: dict[str, Any]) -> dict[str, Any]:
    """A `pause` container mounting the claim `data`, placed as `placement` (pod spec fields) says."""
    return {
        "containers": [
            {"name": "main", "image": "pause", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "tolerations": [GPU_TOLERATION],  # every node of the sandbox will do
        "terminationGracePeriodSeconds": 1,
        **placement,
    }


def let_go_of_pods(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
    """The Deployment and its ReplicaSet go and their pods stay: none is replaced any more."""
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Orphan")
    wait_for("the Deployment gone", lambda: not apps.list_namespaced_deployment(namespace).items or None)
    for rs in apps.list_namespaced_replica_set(namespace).items:
        apps.delete_namespaced_replica_set(rs.metadata.name, namespace, propagation_policy="Orphan")

    def orphaned() -> bool | None:
        if apps.list_namespaced_replica_set(namespace).items:
            return None
        return all(not p.metadata.owner_references for p in pods(core, namespace)) or None

    wait_for("the pods orphaned", orphaned)


ON_TWO_NODES = {
    "affinity": {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
}


def pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    listed = core.list_namespaced_pod(namespace, label_selector="app=web").items
    return [p for p in listed if not p.metadata.deletion_timestamp]


def attach_events(core: client.CoreV1Api, namespace: str, pod: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.name={pod},reason=FailedAttachVolume"
    return list(core.list_namespaced_event(namespace, field_selector=selector).items)


def running(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    return core.read_namespaced_pod(name, namespace).status.phase == "Running"


def used_by(volume: str, pod: client.V1Pod) -> str:
    """The Event's message in the attach/detach controller's words (reconciler.go)."""
    return f'Multi-Attach error for volume "{volume}" Volume is already used by pod(s) {pod.metadata.name}'


def both_running(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod] | None:
    now = pods(core, namespace)
    return now if len(now) == 2 and all(p.status.phase == "Running" for p in now) else None


def holder_and_waiter(core: client.CoreV1Api, namespace: str) -> tuple[client.V1Pod, client.V1Pod] | None:
    """The pod that runs and the pod refused the volume, once there are both."""
    now = pods(core, namespace)
    up = [p for p in now if p.status.phase == "Running"]
    refused = [
        p for p in now if p.status.phase == "Pending" and attach_events(core, namespace, p.metadata.name)
    ]
    return (up[0], refused[0]) if len(up) == 1 and len(refused) == 1 else None


def test_a_readwriteonce_volume_goes_to_one_node_at_a_time(sandbox: Sandbox, namespace: str) -> None:
    core, apps = client.CoreV1Api(sandbox.api), client.AppsV1Api(sandbox.api)
    volume = claim(core, namespace, "ReadWriteOnce")
    deployment(apps, namespace, ON_TWO_NODES)

    holder, waiter = wait_for(
        "one pod running, the other refused the volume", lambda: holder_and_waiter(core, namespace)
    )
    assert holder.spec.node_name != waiter.spec.node_name
    [event] = attach_events(core, namespace, waiter.metadata.name)
    assert event.type == "Warning"
    assert event.message == used_by(volume, holder)
    time.sleep(3)  # it goes on waiting, and is not started behind the Event's back
    waiting = core.read_namespaced_pod(waiter.metadata.name, namespace)
    assert waiting.status.phase == "Pending"
    assert [cs.state.waiting.reason for cs in waiting.status.container_statuses] == ["ContainerCreating"]
    assert len(attach_events(core, namespace, waiter.metadata.name)) == 1  # one Event, not one per retry

    # The holder goes: once its process has stopped, the volume is detached and the waiting pod starts.
    # Nothing replaces the holder: a ReplicaSet's replacement lands on the holder's node, where the volume
    # is still attached until the holder's process stops, and may take it first (so on a real cluster
    # too; a clean-clone CI rehearsal saw the waiter still waiting after 30 s).
    let_go_of_pods(core, apps, namespace)
    core.delete_namespaced_pod(holder.metadata.name, namespace)
    wait_for(
        "the waiting pod started",
        lambda: running(core, namespace, waiter.metadata.name) or None,
        timeout_s=30,
    )

    # A pod started on the holder's node now waits for the volume in its turn.
    on_holders_node = {"nodeSelector": {"kubernetes.io/hostname": holder.spec.node_name}}
    core.create_namespaced_pod(namespace, {"metadata": {"name": "late"}, "spec": pod_spec(on_holders_node)})
    event = wait_for(
        "the late pod refused the volume",
        lambda: next(iter(attach_events(core, namespace, "late")), None),
        timeout_s=30,
    )
    assert event.message == used_by(volume, waiter)
    assert core.read_namespaced_pod("late", namespace).status.phase == "Pending"


def test_pods_on_one_node_share_a_readwriteonce_volume(sandbox: Sandbox, namespace: str) -> None:
    core, apps = client.CoreV1Api(sandbox.api), client.AppsV1Api(sandbox.api)
    claim(core, namespace, "ReadWriteOnce")
    deployment(apps, namespace, {"nodeSelector": {"kubernetes.io/hostname": "cpu-node-0"}})

    wait_for("both pods running on one node", lambda: both_running(core, namespace))
    assert not core.list_namespaced_event(namespace, field_selector="reason=FailedAttachVolume").items


def test_a_readwritemany_volume_is_used_on_several_nodes_at_once(sandbox: Sandbox, namespace: str) -> None:
    core, apps = client.CoreV1Api(sandbox.api), client.AppsV1Api(sandbox.api)
    claim(core, namespace, "ReadWriteMany")
    deployment(apps, namespace, ON_TWO_NODES)

    both = wait_for("both pods running", lambda: both_running(core, namespace))
    assert both[0].spec.node_name != both[1].spec.node_name
    assert not core.list_namespaced_event(namespace, field_selector="reason=FailedAttachVolume").items
