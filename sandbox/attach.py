"""Which node a PersistentVolume is attached to, decided as a real cluster's attach/detach controller
decides it for network block storage (EBS gp3 on EKS, PD on GKE, Azure Disk: the common default
classes): a volume whose access modes allow no multi-attach is attached to one node at a time.

The pod runner asks before it sets up a pod's volumes (podlife.py). A pod that may not have a volume
stays ContainerCreating with a Warning Event in Kubernetes' own words (reconciler.go's
reportMultiAttachError) and is tried again once the pods holding the volume have stopped.

Who holds a volume is derived from the pods in the API (the runner's watch of them), not from state of
our own: a pod holds the volumes it claims on its node once its containers have started (its status
shows a container running or ended, or phase Running), until it finishes or is deleted. That survives a
pod-runner restart with nothing to keep in step or clean up: a restarted runner finds the same holder
in the same statuses, as a restarted controller rebuilds its attachments from the nodes and pods. Within
one runner the pods it let through count as well until their processes have stopped: the API shows a
start only once the pod's status is sent, and a deleted pod leaves the API before its processes end
(its volume is unmounted, then detached, only after that).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.volumes import BoundClaim, VolumeNotReady

# Kubernetes' util.IsMultiAttachAllowed: a PV with either mode (or with no modes at all) may be attached
# to several nodes; one with only ReadWriteOnce and/or ReadWriteOncePod may not.
MULTI_NODE_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})
ONE_POD_MODE = "ReadWriteOncePod"


@dataclass(frozen=True)
class VolumeUser:
    """Another pod that uses the volume, as the decision sees it."""

    name: str
    node: str
    holds: bool  # keeps the volume attached to its node (its containers started and have not stopped)
    listed: bool  # in the API and not finished: the pods a real controller names in its message


@dataclass(frozen=True)
class AttachRefusal:
    reason: str  # the Warning Event's reason
    message: str


def multi_attach_allowed(access_modes: Sequence[str]) -> bool:
    return not access_modes or any(mode in MULTI_NODE_MODES for mode in access_modes)


def attach_refusal(
    volume: str, access_modes: Sequence[str], node: str, users: Iterable[VolumeUser]
) -> AttachRefusal | None:
    """Why a pod on `node` may not have `volume` now (None: it may), given the other pods that use it.

    The users of a claim are all of its namespace, so the message names them all (reconciler.go counts
    pods of other namespaces instead of naming them; a claim never has any)."""
    if multi_attach_allowed(access_modes):
        return None
    users = list(users)
    attached_elsewhere = {u.node for u in users if u.holds and u.node != node}
    if attached_elsewhere:
        # reconciler.go names the pods that use the volume on the nodes it is attached to; with none left
        # (deleted, their processes still stopping) it says the volume is attached elsewhere.
        blocking = sorted(u.name for u in users if u.listed and u.node in attached_elsewhere)
        if blocking:
            detail = f"Volume is already used by pod(s) {', '.join(blocking)}"
        else:
            detail = "Volume is already exclusively attached to one node and can't be attached to another"
        return AttachRefusal("FailedAttachVolume", f'Multi-Attach error for volume "{volume}" {detail}')
    holders_here = sorted(u.name for u in users if u.holds)
    if ONE_POD_MODE in access_modes and holders_here:
        # A real cluster's scheduler keeps a second pod of a ReadWriteOncePod claim Pending; only a pod
        # that bypasses it (spec.nodeName) gets this far, and then its CSI driver refuses the mount.
        return AttachRefusal(
            "FailedMount",
            f'MountVolume.SetUp failed for volume "{volume}" : the volume is ReadWriteOncePod and already '
            f"used by pod(s) {', '.join(holders_here)}",
        )
    return None


@dataclass(frozen=True)
class ClaimUse:
    """What the attach rules need of a pod in the API that mounts claims."""

    namespace: str
    name: str
    node: str
    claims: frozenset[str]
    started: bool  # the runner started its containers (what a status shows of it, see below)
    finished: bool
    deleting: bool


def claim_use(pod: dict[str, Any]) -> ClaimUse | None:
    """The claims a scheduled pod mounts, and how far it got; None for a pod that mounts none."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    claims = frozenset(
        v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or []
        if "persistentVolumeClaim" in v
    )
    if not claims:
        return None
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    # A container waiting for its first start shows only `waiting`; once started it shows `running`, or
    # `terminated`, or a `lastState` while it waits to restart.
    ran = any(
        "running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {}) or cs.get("lastState")
        for cs in statuses
    )
    phase = status.get("phase")
    return ClaimUse(
        namespace=pod["metadata"]["namespace"],
        name=pod["metadata"]["name"],
        node=spec.get("nodeName") or "",
        claims=claims,
        started=ran or phase == "Running",
        finished=phase in ("Succeeded", "Failed"),
        deleting=bool(pod["metadata"].get("deletionTimestamp")),
    )


ClaimKeys = frozenset[tuple[str, str]]  # (namespace, claim name): a claim, wherever it is named


def _keys(namespace: str, claims: Iterable[str]) -> ClaimKeys:
    return frozenset((namespace, claim) for claim in claims)


class VolumeNotAttachable(VolumeNotReady):
    """The volume is attached to another node (or, ReadWriteOncePod, used by another pod)."""

    def __init__(self, refusal: AttachRefusal):
        super().__init__(refusal.message)
        self.reason = refusal.reason

    def event_message(self) -> str:
        return str(self)


class VolumeAttachments:
    """The pod runner's attach/detach bookkeeping (see the module's docstring): the pods of the API that
    mount claims, the pods this runner let through and has not released, and the pods waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_api: dict[str, ClaimUse] = {}  # uid -> the pod as last seen
        self._attached: dict[str, ClaimUse] = {}  # uid -> a pod let through whose processes have not stopped
        self._released: set[str] = set()  # uids let through whose processes have stopped
        self._waiting: dict[str, tuple[ClaimKeys, threading.Event]] = {}

    def saw(self, pod: dict[str, Any], deleted: bool = False) -> None:
        """A pod as the watch delivered it (every scheduled pod, not only this runner's own)."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            if deleted:
                self._forget(uid)
            else:
                self._saw(uid, claim_use(pod))

    def relisted(self, pods: list[dict[str, Any]]) -> None:
        """Every scheduled pod, from a (re)list: seen all at once before any of them is started, so that
        a restarted runner finds each holder before it lets another pod have the volume; the pods
        deleted while the watch was down are forgotten."""
        listed = {pod["metadata"]["uid"]: pod for pod in pods}
        with self._lock:
            for uid in self._in_api.keys() - listed.keys():
                self._forget(uid)
            for uid, pod in listed.items():
                self._saw(uid, claim_use(pod))

    def attach(self, pod: dict[str, Any], claims: Mapping[str, BoundClaim], wake: threading.Event) -> None:
        """Attach the pod's claimed volumes to its node, or raise VolumeNotAttachable; `wake` is set when a
        pod holding one of them lets go (until then the caller retries on its own)."""
        if not claims:
            return
        meta = pod["metadata"]
        uid, namespace, node = meta["uid"], meta["namespace"], pod["spec"].get("nodeName") or ""
        names = frozenset(c.claim for c in claims.values())
        with self._lock:
            for bound in claims.values():
                users = self._users(uid, (namespace, bound.claim))
                refusal = attach_refusal(bound.volume, bound.access_modes, node, users)
                if refusal is not None:
                    self._waiting[uid] = (_keys(namespace, names), wake)
                    raise VolumeNotAttachable(refusal)
            self._waiting.pop(uid, None)
            self._attached[uid] = ClaimUse(
                namespace, meta["name"], node, names, started=True, finished=False, deleting=False
            )

    def release(self, uid: str) -> None:
        """The pod's processes have stopped: its volumes are detached (or it stopped waiting for them)."""
        with self._lock:
            self._waiting.pop(uid, None)
            before = self._holding(uid)
            if self._attached.pop(uid, None) is not None and uid in self._in_api:
                self._released.add(uid)  # until the pod leaves the API: its status still shows it started
            self._wake_if_let_go(uid, before)

    # -- under self._lock -----------------------------------------------------------------------
    def _saw(self, uid: str, use: ClaimUse | None) -> None:
        if use is None:  # it mounts no claim (a pod's volumes never change: it never did)
            return
        before = self._holding(uid)
        self._in_api[uid] = use
        self._wake_if_let_go(uid, before)

    def _forget(self, uid: str) -> None:
        before = self._holding(uid)
        self._in_api.pop(uid, None)
        self._released.discard(uid)
        self._wake_if_let_go(uid, before)

    def _holding(self, uid: str) -> ClaimKeys:
        """The claims `uid` holds now."""
        if uid in self._attached:
            use = self._attached[uid]
        else:
            # A pod this runner has not let through (yet) holds by its status alone: so after a restart.
            api = self._in_api.get(uid)
            if api is None or uid in self._released or not api.started or api.finished or api.deleting:
                return frozenset()
            use = api
        return _keys(use.namespace, use.claims)

    def _users(self, me: str, key: tuple[str, str]) -> list[VolumeUser]:
        users = []
        for uid in (self._in_api.keys() | self._attached.keys()) - {me}:
            use = self._attached.get(uid) or self._in_api[uid]
            if key not in _keys(use.namespace, use.claims):
                continue
            api = self._in_api.get(uid)
            listed = api is not None and not api.finished
            users.append(VolumeUser(use.name, use.node, key in self._holding(uid), listed))
        return users

    def _wake_if_let_go(self, uid: str, held_before: ClaimKeys) -> None:
        """Wake the pods waiting for a claim `uid` held before and holds no more."""
        let_go = held_before - self._holding(uid)
        for waiting_for, event in self._waiting.values():
            if waiting_for & let_go:
                event.set()
