"""What a TritonServer's children say: facts, its conditions, the per-pod status entries, and what
to write on each pod's models-loaded gate.

Pure: takes the Deployment and pods as the API returned them and each pod's Triton health as the
operator read it; no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.conditions import (
    CLAIM_BIND_GRACE_S,
    DecidedCondition,
    ObservedPod,
    ObservedServerState,
    server_conditions,
    server_stuck,
    with_kstatus,
)
from triton_operator.render.labels import APPLIED_GENERATION_ANNOTATION, MODELS_LOADED_GATE
from triton_operator.render.server import CONTAINER_NAME, spec_has_models_gate
from triton_operator.triton.client import Health, ModelState

UNBOUND_CLAIMS_MESSAGE = "unbound immediate PersistentVolumeClaims"

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class PodTriton:
    """What Triton itself said on one pod (None fields: it could not be asked)."""

    health: Health | None = None
    models: Sequence[ModelState] = ()
    unreachable: str | None = None


def _condition(obj: Obj, ctype: str) -> Obj | None:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == ctype), None)


def pod_is_ready(pod: Obj) -> bool:
    """The pod takes traffic: Triton answers and (readiness gate) its models are loaded."""
    cond = _condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True") and not pod["metadata"].get("deletionTimestamp")


def triton_is_up(pod: Obj) -> bool:
    """Triton answers in the pod (its containers pass their readiness probes): models can be loaded
    into it. The pod is Ready (takes traffic) only once its models-loaded gate is True as well."""
    cond = _condition(pod, "ContainersReady")
    return bool(cond and cond.get("status") == "True") and not pod["metadata"].get("deletionTimestamp")


def triton_restarts(pod: Obj) -> int:
    """How often the pod's Triton container restarted (a restarted Triton has no models loaded)."""
    return int(_triton_container(pod).get("restartCount") or 0)


def gate_status(pod: Obj) -> str | None:
    """The models-loaded readiness gate's condition status ("True"/"False"), None when not set."""
    cond = _condition(pod, MODELS_LOADED_GATE)
    return str(cond.get("status")) if cond else None


# Timestamps are whole seconds (the gate's is cut to them): a start this much later than the gate's
# opening is surely later.
STARTED_AFTER_GATE_MARGIN_S = 1.0


def triton_started_after_gate(pod: Obj) -> bool:
    """Whether the pod's Triton process started after its models-loaded gate was last opened, by the
    timestamps on the pod (its container's start, the gate's transition): a Triton that restarted while
    no operator was running has lost its models though its gate still says True."""
    cond = _condition(pod, MODELS_LOADED_GATE)
    started = ((_triton_container(pod).get("state") or {}).get("running") or {}).get("startedAt")
    if not cond or cond.get("status") != "True" or not cond.get("lastTransitionTime") or not started:
        return False
    later_s = (kubernetes_time(started) - kubernetes_time(cond["lastTransitionTime"])).total_seconds()
    return later_s > STARTED_AFTER_GATE_MARGIN_S


def has_models_gate(pod: Obj) -> bool:
    """The pod's spec has the models-loaded readiness gate (pods of older templates do not)."""
    return spec_has_models_gate(pod.get("spec") or {})


def _triton_container(pod: Obj) -> Obj:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == CONTAINER_NAME), statuses[0] if statuses else {})


_GLOG_ERROR = re.compile(r'^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?(?P<text>.*?)"?$')
MAX_ERROR_CHARS = 400


def triton_errors(log_tail: str) -> str:
    """Triton's own error lines from a crashed container's last log lines (its termination message).

    Triton logs errors as glog `E...` lines and ends a failed start with `error: ...`; everything
    else (its option table, info lines) is noise in a condition message.
    """
    found = []
    for line in log_tail.splitlines():
        line = line.strip()
        match = _GLOG_ERROR.match(line)
        if match:
            found.append(match.group("text"))
        elif line.lower().startswith("error:"):
            found.append(line[len("error:") :].strip())
    text = "; ".join(dict.fromkeys(found))  # keep order, drop repeats
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _triton_message(triton: PodTriton | None) -> str | None:
    if triton is None:
        return None
    if triton.health is not None and not triton.health.ready:
        return triton.health.error or "Triton reports not ready"
    return None


# A kubelet forgets a container's crash loop (resets its back-off) once it ran this long.
CRASH_LOOP_RESET_S = 600.0


def crashing_again(container: Obj, now: datetime) -> bool:
    """Whether a container is down because it crashed, between back-offs: started again after a failed
    run that ended less than CRASH_LOOP_RESET_S ago, not ready yet (a kubelet restarts a container that
    crashed once at once, and later ones after a back-off). Its state says running then, not
    CrashLoopBackOff; without this the server's Degraded flipped to False at every such restart."""
    last = (container.get("lastState") or {}).get("terminated") or {}
    finished = last.get("finishedAt")
    if container.get("ready") or "running" not in (container.get("state") or {}) or not finished:
        return False
    if int(container.get("restartCount") or 0) < 1 or int(last.get("exitCode") or 0) == 0:
        return False
    return seconds_since(finished, now) < CRASH_LOOP_RESET_S


def observe_pod(pod: Obj, triton: PodTriton | None, now: datetime | None = None) -> ObservedPod:
    container = _triton_container(pod)
    waiting = (container.get("state") or {}).get("waiting") or {}
    crash_looping = waiting.get("reason") == "CrashLoopBackOff" or crashing_again(
        container, now or datetime.now(UTC)
    )
    scheduled = _condition(pod, "PodScheduled")
    unschedulable = (
        scheduled.get("message") or "Unschedulable"
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        else None
    )
    # The scheduler's VolumeBinding pre-filter fails before any node is looked at: then the claims are
    # all it waits for, and its message says only that.
    waits_for_claim = UNBOUND_CLAIMS_MESSAGE in (unschedulable or "")
    unschedulable_for_s = 0.0
    if unschedulable and scheduled is not None:
        since = scheduled.get("lastTransitionTime") or pod["metadata"].get("creationTimestamp")
        unschedulable_for_s = max(0.0, seconds_since(since, now or datetime.now(UTC))) if since else 0.0
    last_term = (container.get("lastState") or {}).get("terminated") or {}
    triton_message = _triton_message(triton)
    if triton_message is None and crash_looping and last_term:
        said = triton_errors(str(last_term.get("message") or ""))
        triton_message = f"exit code {last_term.get('exitCode')}" + (f": {said}" if said else "")
    return ObservedPod(
        name=pod["metadata"]["name"],
        ready=pod_is_ready(pod),
        loading_models=triton_is_up(pod) and has_models_gate(pod) and gate_status(pod) != "True",
        unschedulable_message=unschedulable,
        waits_for_claim=waits_for_claim,
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        restart_count=int(container.get("restartCount") or 0),
        crash_looping=crash_looping,
        triton_message=triton_message,
        unschedulable_for_s=unschedulable_for_s,
    )


def applied_generation(deployment: Obj | None) -> int:
    """The TritonServer generation the Deployment was last applied from (0: unknown)."""
    annotations = (deployment or {}).get("metadata", {}).get("annotations") or {}
    value = annotations.get(APPLIED_GENERATION_ANNOTATION, "0")
    return int(value) if str(value).isdigit() else 0


def claim_binding(claim: Obj | None, now: datetime) -> bool:
    """Whether pods held for this claim are starting, not stuck: it is Pending within normal
    provisioning time (CLAIM_BIND_GRACE_S), or already Bound (the scheduler's verdict on the pod is
    older than the binding; it retries at once)."""
    phase = ((claim or {}).get("status") or {}).get("phase", "Pending")
    if claim is None or phase not in ("Pending", "Bound"):
        return False
    return phase == "Bound" or created_within(claim, CLAIM_BIND_GRACE_S, now)


def created_within(obj: Obj, seconds: float, now: datetime) -> bool:
    """Whether the object was created less than `seconds` before `now` (no timestamp yet: just now)."""
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return True
    return seconds_since(created, now) < seconds


def kubernetes_time(timestamp: Any) -> datetime:
    """A Kubernetes timestamp (`2026-12-01T10:00:00Z`) as an aware datetime."""
    return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))


def seconds_since(timestamp: Any, now: datetime) -> float:
    """Seconds from a Kubernetes timestamp to `now`."""
    return (now - kubernetes_time(timestamp)).total_seconds()


def waits_for_claim(pods: Sequence[Obj]) -> bool:
    """Whether some live pod is held by the scheduler for its claims only (then the claim is worth a GET)."""
    return any(
        observe_pod(p, None).waits_for_claim for p in pods if not p["metadata"].get("deletionTimestamp")
    )


def observe_server(
    deployment: Obj | None,
    pods: Sequence[Obj],
    triton_by_pod: Mapping[str, PodTriton],
    claim_is_binding: bool = False,
    now: datetime | None = None,
    autoscaled_floor: int | None = None,
) -> ObservedServerState:
    """The facts `server_conditions` decides from (timed from `now`, default the current time;
    `autoscaled_floor`: spec.autoscaling.minReplicas)."""
    applied = applied_generation(deployment)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    observed_pods = tuple(observe_pod(p, triton_by_pod.get(p["metadata"]["name"]), now) for p in live)
    if deployment is None:
        return ObservedServerState(
            applied_generation=applied,
            deployment_found=False,
            pods=observed_pods,
            claim_binding=claim_is_binding,
        )
    status = deployment.get("status") or {}
    progressing = _condition(deployment, "Progressing")
    return ObservedServerState(
        applied_generation=applied,
        deployment_found=True,
        deployment_generation=int(deployment["metadata"].get("generation") or 0),
        deployment_observed_generation=int(status.get("observedGeneration") or 0),
        desired_replicas=int(deployment.get("spec", {}).get("replicas", 1)),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        progress_deadline_exceeded=bool(
            progressing and progressing.get("reason") == "ProgressDeadlineExceeded"
        ),
        deployment_complete=bool(progressing and progressing.get("reason") == "NewReplicaSetAvailable"),
        pods=observed_pods,
        claim_binding=claim_is_binding,
        autoscaled_floor=autoscaled_floor,
    )


def pod_entries(pods: Sequence[Obj], triton_by_pod: Mapping[str, PodTriton]) -> list[dict[str, Any]]:
    """status.pods: one entry per live pod, sorted by name, with Triton's own view of it."""
    entries = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        triton = triton_by_pod.get(name)
        observed = observe_pod(pod, triton)
        entry: dict[str, Any] = {"name": name, "ready": observed.ready}
        if ip := pod.get("status", {}).get("podIP"):
            entry["ip"] = ip
        if triton and triton.health and triton.health.version:
            entry["tritonVersion"] = triton.health.version
        if triton:
            entry["modelsLoaded"] = sorted({m.name for m in triton.models if m.state == "READY"})
        message = _pod_message(observed, triton)
        if message:
            entry["message"] = message
        entries.append(entry)
    return entries


def _pod_message(observed: ObservedPod, triton: PodTriton | None) -> str | None:
    if observed.ready:
        # The kubelet's probes pass (HTTP), yet the operator cannot ask Triton (gRPC, /metrics): say so,
        # or the pod's entry would look healthy while its models report it unreachable.
        return f"Triton not reachable: {triton.unreachable}" if triton and triton.unreachable else None
    if observed.waits_for_claim:
        return f"waiting for its PersistentVolumeClaim to be bound ({observed.unschedulable_message})"
    if observed.unschedulable_message:
        return f"Unschedulable: {observed.unschedulable_message}"
    if observed.triton_message:
        return observed.triton_message
    if observed.waiting_reason:
        return (
            f"{observed.waiting_reason}: {observed.waiting_message}"
            if observed.waiting_message
            else observed.waiting_reason
        )
    if triton and triton.unreachable:
        return f"Triton not reachable: {triton.unreachable}"
    return "starting"


@dataclass(frozen=True)
class ApplyFailure:
    """Applying a TritonServer's children failed for this generation: why, as its conditions say."""

    generation: int
    reason: str
    message: str
    # Applying again cannot help until the spec changes (an invalid spec, a 4xx): Stalled=True.
    permanent: bool = True


def server_status_conditions(
    observed: ObservedServerState,
    generation: int,
    failure: ApplyFailure | None = None,
    routed: DecidedCondition | None = None,
) -> list[DecidedCondition]:
    """Every condition an observing pass writes: the observed ones, an apply failure of this generation
    over them, Routed with spec.gateway, and Reconciling and Stalled for kstatus (Flux) from all that."""
    decided = server_conditions(observed, generation)
    stuck = server_stuck(observed)
    if failure is not None and failure.generation == generation:
        decided = with_apply_failure(decided, failure)
        stuck = failure.permanent
    if routed is not None:
        decided = with_route_problem(decided, routed)
    return with_kstatus(decided, stuck)


def failed_conditions(failure: ApplyFailure) -> list[DecidedCondition]:
    """Ready, Progressing and Degraded of a server whose spec could not be applied."""
    reason, message = failure.reason, failure.message
    return [
        DecidedCondition(ConditionType.READY, ConditionStatus.FALSE, reason, message),
        DecidedCondition(ConditionType.PROGRESSING, ConditionStatus.FALSE, reason, message),
        DecidedCondition(ConditionType.DEGRADED, ConditionStatus.TRUE, reason, message),
    ]


def with_apply_failure(decided: list[DecidedCondition], failure: ApplyFailure) -> list[DecidedCondition]:
    """The observed conditions, but Ready, Progressing and Degraded say why the apply failed."""
    failed = {c.type: c for c in failed_conditions(failure)}
    return [failed.get(c.type, c) for c in decided]


def with_route_problem(decided: list[DecidedCondition], routed: DecidedCondition) -> list[DecidedCondition]:
    """Add Routed; a route the gateway refused also makes the server Degraded (its pods may still serve
    in-cluster clients, so Ready stays as the pods say)."""
    out = list(decided)
    if routed.status == ConditionStatus.FALSE:
        out = [
            DecidedCondition(c.type, ConditionStatus.TRUE, routed.reason, routed.message)
            if c.type == ConditionType.DEGRADED and c.status != ConditionStatus.TRUE
            else c
            for c in out
        ]
    return [*out, routed]


LISTED_WAITING = 5  # models named in the condition's message


@dataclass(frozen=True)
class GateChange:
    """The gate condition to write on one pod."""

    status: str  # "True" / "False"
    reason: str
    message: str


def gate_change(
    *,
    has_gate: bool,
    triton_up: bool,
    gate: str | None,
    restarts: int,
    granted_at_restarts: int | None,
    waiting_for: Sequence[str],
    loaded: int,
    started_after_gate: bool = False,
) -> GateChange | None:
    """What to write on a pod's gate, None to leave it as it is.

    `gate`: the condition's status now (None: not set yet); `granted_at_restarts`: the Triton restart
    count when this process opened the gate (None: not opened by this process); `waiting_for`: the
    server's models not loaded (or refused) into this Triton yet; `loaded`: how many are;
    `started_after_gate`: the pod's timestamps say its Triton started after the gate opened (asked
    only of a gate this process did not open: its restart count says it better, whatever the clocks).
    """
    if not has_gate:
        return None  # a pod of an older template: Kubernetes does not wait for the gate
    if gate == "True":
        if not triton_up:
            return GateChange("False", "TritonNotReady", "Triton stopped answering; its models load again.")
        restarted = restarts > granted_at_restarts if granted_at_restarts is not None else started_after_gate
        if restarted:
            return GateChange("False", "TritonRestarted", f"Triton restarted ({restarts} restarts); loading.")
        return None
    if not triton_up:
        return None  # not Ready anyway (its containers are not); loading starts once Triton answers
    if waiting_for:
        if gate is not None:
            return None  # said so already; one write per pod start, not one per model loaded
        listed = ", ".join(waiting_for[:LISTED_WAITING])
        more = f" and {len(waiting_for) - LISTED_WAITING} more" if len(waiting_for) > LISTED_WAITING else ""
        return GateChange("False", "LoadingModels", f"Loading {len(waiting_for)} models: {listed}{more}.")
    said = {0: "No model to load.", 1: "1 model loaded."}.get(loaded, f"{loaded} models loaded.")
    return GateChange("True", "ModelsLoaded", said)
