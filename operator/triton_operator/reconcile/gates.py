"""The models-loaded readiness gate of Triton pods.

Triton's own readiness says only that the server answers: a new, replaced or restarted pod is ready
with no model loaded (the operator loads models through Triton's API once Triton answers), and a
Service would send it requests for models it does not have (404 "unknown model" for every client
while a server rolls or a Triton restarts). The pods therefore carry a readiness gate
(`tritonoperator.dev/models-loaded`): Kubernetes counts a pod Ready, and puts it behind its Service,
only once the operator set that pod condition True, which it does when every model of the server
with files in the repository has been loaded into that Triton (or refused by it: a model that fails
to load fails on every pod alike and says so in its own status; it must not hold the pods back).

The gate opens once per Triton process: models added later are hot-loaded into Ready pods as before.
A Triton that stops answering or restarted closes it again (it lost its models), also one that
restarted while no operator ran (its container started after the gate's last transition).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from triton_operator.kube.rest import Kube
from triton_operator.observe.server import (
    GateChange,
    gate_change,
    gate_status,
    has_models_gate,
    triton_is_up,
    triton_restarts,
    triton_started_after_gate,
)
from triton_operator.reconcile.state import Key, ModelMemory, OperatorState
from triton_operator.reconcile.status import now
from triton_operator.render.labels import MODELS_LOADED_GATE

log = logging.getLogger(__name__)


def model_settled_on(memory: ModelMemory | None, status: Mapping[str, Any], uid: str, restarts: int) -> bool:
    """Whether a model holds nothing back on a pod's Triton: loaded (or refused) since Triton started,
    or it has no files to load. A model this process has not passed yet counts by its status."""
    if memory is None:
        return not status.get("stagedDigest")
    if memory.staged is None:
        return True
    return memory.settled.get(uid) == restarts


def models_of(kube: Kube, namespace: str, server: str) -> list[dict[str, Any]]:
    """The TritonModels placed on `server` (not the ones being deleted: they are unloading)."""
    return [
        m
        for m in kube.list("TritonModel", namespace)
        if ((m.get("spec") or {}).get("serverRef") or {}).get("name") == server
        and not m["metadata"].get("deletionTimestamp")
    ]


def sync_gates(kube: Kube, state: OperatorState, server: Key, pods: Sequence[Mapping[str, Any]]) -> None:
    """Open or close the models-loaded gate of each of the server's pods, as `gate_change` decides.

    Lists the server's TritonModels only when some pod waits for its gate (a pod starting)."""
    namespace, name = server
    models: list[dict[str, Any]] | None = None
    for pod in pods:
        if not has_models_gate(pod) or pod["metadata"].get("deletionTimestamp"):
            continue
        uid, gate = pod["metadata"]["uid"], gate_status(pod)
        up, restarts = triton_is_up(pod), triton_restarts(pod)
        waiting: list[str] = []
        if gate != "True" and up:
            if models is None:
                models = models_of(kube, namespace, name)
            waiting = sorted(
                m["metadata"]["name"]
                for m in models
                if not model_settled_on(
                    state.models.get((namespace, m["metadata"]["name"])), m.get("status") or {}, uid, restarts
                )
            )
        change = gate_change(
            has_gate=True,
            triton_up=up,
            gate=gate,
            restarts=restarts,
            granted_at_restarts=state.gates_opened.get((server, uid)),
            waiting_for=waiting,
            loaded=len(models or []) - len(waiting),
            started_after_gate=triton_started_after_gate(pod),
        )
        if change is None:
            continue
        pod_name = pod["metadata"]["name"]
        try:
            kube.patch_pod_condition(namespace, pod_name, condition(change))
        except ApiException as exc:
            if exc.status != 404:  # a pod that is gone needs no gate
                raise
            continue
        if change.status == "True":
            state.gates_opened[(server, uid)] = restarts
            log.info("pod %s/%s takes traffic: %s", namespace, pod_name, change.message)
        else:
            state.gates_opened.pop((server, uid), None)
            log.info("pod %s/%s waits: %s", namespace, pod_name, change.message)
    live = {p["metadata"]["uid"] for p in pods}
    for key in [k for k in state.gates_opened if k[0] == server and k[1] not in live]:
        del state.gates_opened[key]


def condition(change: GateChange) -> dict[str, Any]:
    """The pod condition for a gate change, as the pod's status lists it."""
    return {
        "type": MODELS_LOADED_GATE,
        "status": change.status,
        "reason": change.reason,
        "message": change.message,
        "lastTransitionTime": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastProbeTime": None,
    }
