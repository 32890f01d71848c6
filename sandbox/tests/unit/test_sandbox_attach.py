"""The sandbox attaches a ReadWriteOnce volume to one node at a time, as a real cluster's attach/detach
controller does for network block storage (sandbox/attach.py): the pure decision, how far a pod got by its
status, and the pod runner's bookkeeping of who holds which claim."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from sandbox.attach import (
    AttachRefusal,
    VolumeAttachments,
    VolumeNotAttachable,
    VolumeUser,
    attach_refusal,
    claim_use,
)
from sandbox.volumes import BoundClaim

pytestmark = pytest.mark.unit

RWO, RWOP, RWX, ROX = "ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany"
PV = "pvc-1"


def holder(name: str, node: str, listed: bool = True) -> VolumeUser:
    return VolumeUser(name, node, holds=True, listed=listed)


def waiter(name: str, node: str) -> VolumeUser:
    return VolumeUser(name, node, holds=False, listed=True)


def multi_attach(detail: str) -> AttachRefusal:
    return AttachRefusal("FailedAttachVolume", f'Multi-Attach error for volume "{PV}" {detail}')


@pytest.mark.parametrize(
    ("modes", "users", "expected"),
    [
        pytest.param([RWO], [], None, id="rwo-nobody-else"),
        pytest.param([RWO], [holder("a", "n1"), holder("b", "n1")], None, id="rwo-shared-on-one-node"),
        pytest.param(
            [RWO],
            [holder("web-2", "n2"), holder("web-1", "n2")],
            multi_attach("Volume is already used by pod(s) web-1, web-2"),
            id="rwo-held-on-another-node",
        ),
        pytest.param(
            [RWO],
            [holder("a", "n2"), waiter("c", "n2"), waiter("d", "n3")],
            multi_attach("Volume is already used by pod(s) a, c"),
            id="rwo-names-every-pod-of-the-holding-node",
        ),
        pytest.param(
            [RWO],
            [holder("gone", "n2", listed=False)],
            multi_attach(
                "Volume is already exclusively attached to one node and can't be attached to another"
            ),
            id="rwo-holder-deleted-its-processes-stopping",
        ),
        pytest.param([RWO], [waiter("b", "n2")], None, id="rwo-others-only-waiting"),
        pytest.param([RWX], [holder("a", "n2")], None, id="rwx-many-nodes"),
        pytest.param([ROX], [holder("a", "n2")], None, id="rox-many-nodes"),
        pytest.param([RWO, ROX], [holder("a", "n2")], None, id="any-many-node-mode-allows"),
        pytest.param([], [holder("a", "n2")], None, id="no-modes-unknown-allowed"),
        pytest.param([RWOP], [], None, id="rwop-nobody-else"),
        pytest.param(
            [RWOP],
            [holder("a", "n1")],
            AttachRefusal(
                "FailedMount",
                f'MountVolume.SetUp failed for volume "{PV}" : the volume is ReadWriteOncePod and already '
                "used by pod(s) a",
            ),
            id="rwop-one-pod-even-on-one-node",
        ),
        pytest.param(
            [RWOP],
            [holder("a", "n2")],
            multi_attach("Volume is already used by pod(s) a"),
            id="rwop-held-on-another-node",
        ),
        pytest.param([RWOP], [waiter("b", "n1")], None, id="rwop-others-only-waiting"),
    ],
)
def test_attach_refusal(modes: list[str], users: list[VolumeUser], expected: AttachRefusal | None) -> None:
    assert attach_refusal(PV, modes, "n1", users) == expected


def pod(
    name: str,
    node: str = "n1",
    claims: tuple[str, ...] = ("models",),
    phase: str = "Pending",
    containers: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "ns", "name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]
            + [{"name": "scratch", "emptyDir": {}}],
        },
        "status": {"phase": phase, "containerStatuses": containers or []},
    }


WAITING = {"state": {"waiting": {"reason": "ContainerCreating"}}}
RUNNING = {"state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}}}
ENDED = {"state": {"terminated": {"exitCode": 0}}}
BACKING_OFF = {
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {"terminated": {"exitCode": 1}},
}


@pytest.mark.parametrize(
    ("phase", "containers", "started", "finished"),
    [
        pytest.param("Pending", [], False, False, id="no-status-yet"),
        pytest.param("Pending", [WAITING], False, False, id="waiting-for-volumes"),
        pytest.param("Pending", [RUNNING, WAITING], True, False, id="one-container-runs"),
        pytest.param("Running", [BACKING_OFF], True, False, id="crash-looping"),
        pytest.param("Running", [], True, False, id="running-phase"),
        pytest.param("Succeeded", [ENDED], True, True, id="succeeded"),
        pytest.param("Failed", [ENDED], True, True, id="failed"),
    ],
)
def test_claim_use_reads_how_far_a_pod_got(
    phase: str, containers: list[dict[str, Any]], started: bool, finished: bool
) -> None:
    use = claim_use(pod("a", phase=phase, containers=containers))
    assert use is not None
    assert use.claims == frozenset({"models"})
    assert (use.started, use.finished) == (started, finished)


def test_a_pod_without_claims_is_no_user() -> None:
    assert claim_use(pod("a", claims=())) is None


def bound(modes: tuple[str, ...] = (RWO,)) -> dict[str, BoundClaim]:
    return {"models": BoundClaim("models", PV, modes, Path("/tmp/pvc-1"))}


def attach(
    attachments: VolumeAttachments, p: dict[str, Any], wake: threading.Event | None = None
) -> str | None:
    """None when attached, else the refusal's message."""
    try:
        attachments.attach(p, bound(), wake or threading.Event())
    except VolumeNotAttachable as exc:
        return str(exc)
    return None


def used_by(*names: str) -> str:
    return f'Multi-Attach error for volume "{PV}" Volume is already used by pod(s) {", ".join(names)}'


def test_the_first_pod_to_attach_holds_the_volume_and_pods_on_its_node_share_it() -> None:
    attachments = VolumeAttachments()
    a, b, c = pod("a", "n1"), pod("b", "n2"), pod("c", "n1")
    for p in (a, b, c):
        attachments.saw(p)  # all scheduled, none started: nobody holds it yet
    assert attach(attachments, a) is None
    assert attach(attachments, b) == used_by("a", "c")  # every pod of the holding node is named
    assert attach(attachments, c) is None


def test_a_waiting_pod_is_woken_when_the_holder_stops_and_attaches() -> None:
    attachments = VolumeAttachments()
    a, b = pod("a", "n1"), pod("b", "n2")
    attachments.saw(a)
    attachments.saw(b)
    assert attach(attachments, a) is None
    wake = threading.Event()
    assert attach(attachments, b, wake) == used_by("a")
    attachments.saw(pod("a", "n1", phase="Running", containers=[RUNNING], deleting=True))
    assert not wake.is_set()  # deleted, but its processes still run: the volume is still mounted there
    attachments.saw(a, deleted=True)
    assert attach(attachments, b, wake) == (
        f'Multi-Attach error for volume "{PV}" '
        "Volume is already exclusively attached to one node and can't be attached to another"
    )
    attachments.release("uid-a")  # its processes stopped
    assert wake.is_set()
    assert attach(attachments, b) is None
    attachments.saw(pod("a2", "n1"))  # the replacement now waits for b
    assert attach(attachments, pod("a2", "n1")) == used_by("b")


def test_after_a_runner_restart_the_pod_whose_status_shows_it_started_holds_the_volume() -> None:
    restarted = VolumeAttachments()
    running = pod("a", "n1", phase="Running", containers=[RUNNING])
    waiting = pod("b", "n2", containers=[WAITING])
    restarted.relisted([waiting, running])  # the listing, all seen before any pod is started
    assert attach(restarted, waiting) == used_by("a")
    assert attach(restarted, running) is None


def test_a_finished_pod_lets_go() -> None:
    attachments = VolumeAttachments()
    job = pod("job", "n1")
    attachments.saw(job)
    assert attach(attachments, job) is None
    attachments.saw(pod("job", "n1", phase="Succeeded", containers=[ENDED]))
    attachments.release("uid-job")
    assert attach(attachments, pod("next", "n2")) is None


def test_a_holder_deleted_while_the_watch_was_down_is_forgotten_on_relist() -> None:
    attachments = VolumeAttachments()
    running = pod("a", "n1", phase="Running", containers=[RUNNING])
    attachments.saw(running)
    wake = threading.Event()
    assert attach(attachments, pod("b", "n2"), wake) == used_by("a")
    attachments.relisted([pod("b", "n2")])
    assert wake.is_set()
    assert attach(attachments, pod("b", "n2")) is None


def test_other_claims_are_not_held() -> None:
    attachments = VolumeAttachments()
    other = pod("a", "n1", claims=("logs",), phase="Running", containers=[RUNNING])
    attachments.saw(other)
    assert attach(attachments, pod("b", "n2")) is None
