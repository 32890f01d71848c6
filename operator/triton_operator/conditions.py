"""Conditions as pure functions: merging metav1.Conditions; a TritonServer's from observed facts; the
Reconciling and Stalled conditions kstatus (Flux, kpt, cli-utils) reads, for both kinds."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from triton_operator.api.common import ConditionStatus, ConditionType

_CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class Severity(enum.Enum):
    """What a reason says of the object: how an Event with it is told, whether a bad condition is news."""

    # A not-yet state that time fixes (files being staged, a model loading, copies being placed): never
    # a problem, whatever condition carries it.
    PROGRESS = "progress"
    # An action or a state: a Normal Event.
    NORMAL = "normal"
    # A problem someone should look at: a Warning Event.
    WARNING = "warning"


PROGRESS, WARNING = Severity.PROGRESS, Severity.WARNING


class Reason(enum.StrEnum):
    """Condition and Event reasons of both kinds (one vocabulary: CONVENTIONS 4), each with its severity.

    Declared with the reason, so the two cannot drift apart (they used to be separate lists of strings).
    """

    severity: Severity

    def __new__(cls, value: str, severity: Severity = Severity.NORMAL) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.severity = severity
        return member

    # Ready / Available
    ALL_REPLICAS_READY = "AllReplicasReady"
    # Ready under spec.autoscaling while the pods the autoscaler added start (at least minReplicas serve).
    SCALING_UP = "ScalingUp"
    REPLICAS_NOT_READY = "ReplicasNotReady", WARNING
    WAITING_FOR_REPLICAS = "WaitingForReplicas", PROGRESS
    WAITING_FOR_SERVER = "WaitingForServer", PROGRESS
    SCALED_TO_ZERO = "ScaledToZero"
    MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
    NO_REPLICAS_AVAILABLE = "NoReplicasAvailable", WARNING
    # Progressing
    RECONCILING = "Reconciling", PROGRESS
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded", WARNING
    # Events only: a TritonServer's replicas changed (kubectl scale, an autoscaler, the spec).
    SCALED = "Scaled"
    # Degraded (or why not Ready)
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec", WARNING
    APPLY_FAILED = "ApplyFailed", WARNING
    MISSING_REFERENCE = "MissingReference", WARNING
    UNSCHEDULABLE = "Unschedulable", WARNING
    IMAGE_PULL_FAILED = "ImagePullFailed", WARNING
    CRASH_LOOPING = "CrashLooping", WARNING
    TRITON_ERROR = "TritonError", WARNING
    # TritonModel
    SERVER_NOT_FOUND = "ServerNotFound", WARNING
    SERVER_NOT_READY = "ServerNotReady", WARNING
    STAGING = "Staging", PROGRESS
    LOADING = "Loading", PROGRESS
    LOADED = "Loaded"
    # Events only: the model was unloaded from its replicas (deleted).
    UNLOADED = "Unloaded"
    LOAD_FAILED = "LoadFailed", WARNING
    STAGED = "Staged"
    STAGING_FAILED = "StagingFailed", WARNING
    # Staging failures: the reasons `triton-operator stage` writes (staging.errors.REASONS).
    INTERNAL_ERROR = "InternalError", WARNING
    INVALID_ARGUMENTS = "InvalidArguments", WARNING
    SOURCE_UNAVAILABLE = "SourceUnavailable", WARNING
    SOURCE_NOT_FOUND = "SourceNotFound", WARNING
    ACCESS_DENIED = "AccessDenied", WARNING
    DIGEST_MISMATCH = "DigestMismatch", WARNING
    CONFIG_REJECTED = "ConfigRejected", WARNING
    TOO_LARGE = "TooLarge", WARNING
    INVALID_ARTIFACT = "InvalidArtifact", WARNING
    # Rollouts: the decisions of rollout.machine.RolloutReason and rollout.traffic that are Events.
    CANARY_STARTED = "CanaryStarted"
    CANARY_REPLACED = "CanaryReplaced"
    CANARY_WITHDRAWN = "CanaryWithdrawn"
    STEP_ADVANCED = "StepAdvanced"
    PROMOTED = "Promoted"
    PROMOTED_BY_COMMAND = "PromotedByCommand"
    ROLLED_BACK = "RolledBack", WARNING
    ABORTED_BY_COMMAND = "AbortedByCommand", WARNING
    RETRIED = "Retried"
    COMMAND_IGNORED = "CommandIgnored"
    ROLLED_OUT_IMMEDIATELY = "RolledOutImmediately"
    EXPERIMENT_RUNNING = "ExperimentRunning"
    # Not Ready yet, with no traffic moved: a new variant (or the router before it) loading on every pod.
    CANARY_LOADING = "CanaryLoading", PROGRESS
    ROUTER_LOADING = "RouterLoading", PROGRESS
    # Gateway routes and copies (reconcile.gateway, reconcile.split)
    ACCEPTED = "Accepted"
    GATEWAY_NOT_FOUND = "GatewayNotFound", WARNING
    GATEWAY_API_MISSING = "GatewayAPIMissing", WARNING
    ROUTE_CONFLICT = "RouteConflict", WARNING
    ROUTE_APPLY_FAILED = "RouteApplyFailed", WARNING
    # A model through a Gateway: its copies being placed on each server, the Gateway yet to accept.
    PLACING_COPIES = "PlacingCopies", PROGRESS
    WAITING_FOR_GATEWAY = "WaitingForGateway", PROGRESS
    # Monitored: the server's PodMonitor (a missing kind is a cluster without the Prometheus Operator,
    # not a fault of the server: Normal).
    POD_MONITOR_APPLIED = "PodMonitorApplied"
    POD_MONITOR_KIND_MISSING = "PodMonitorKindMissing"
    POD_MONITOR_FAILED = "PodMonitorFailed", WARNING
    # Autoscaled: the server's KEDA ScaledObject and the HPA KEDA made of it (a missing kind is a cluster
    # without KEDA: Normal, the pool keeps its size).
    SCALING_ACTIVE = "ScalingActive"
    SCALED_OBJECT_KIND_MISSING = "ScaledObjectKindMissing"
    SCALED_OBJECT_FAILED = "ScaledObjectFailed", WARNING
    PROMETHEUS_ADDRESS_MISSING = "PrometheusAddressMissing", WARNING
    WAITING_FOR_AUTOSCALER = "WaitingForAutoscaler", PROGRESS
    SCALING_INACTIVE = "ScalingInactive", WARNING
    COPY_CONFLICT = "CopyConflict", WARNING


def is_progress(reason: str) -> bool:
    """Whether a reason is a not-yet state that time fixes (no problem, whatever the condition)."""
    try:
        return Reason(reason).severity is Severity.PROGRESS
    except ValueError:
        return False


def is_warning(reason: str, default: bool) -> bool:
    """A reason's severity; `default` for a reason outside the vocabulary (a gateway's own, say)."""
    try:
        return Reason(reason).severity is Severity.WARNING
    except ValueError:
        return default


class DecidedCondition(NamedTuple):
    """A condition decided from observed facts, before timestamps and generation are attached."""

    type: str
    status: ConditionStatus
    reason: str
    message: str

    @classmethod
    def said(cls, ctype: str, ok: bool, reason: str, message: str) -> DecidedCondition:
        """True or False as decided, with its reason and message."""
        return cls(ctype, ConditionStatus.TRUE if ok else ConditionStatus.FALSE, reason, message)


def rfc3339(now: datetime) -> str:
    """metav1.Time's wire format (UTC, seconds)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """A new list with one condition set; lastTransitionTime is kept unless the status flips."""
    if not _CAMEL_CASE.match(type) or not _CAMEL_CASE.match(reason):
        raise ValueError(
            f"condition type and reason must be CamelCase and non-empty, got {type!r}/{reason!r}"
        )
    previous = next((c for c in conditions if c.get("type") == type), None)
    unchanged = (
        previous is not None and previous.get("status") == str(status) and "lastTransitionTime" in previous
    )
    condition = {
        "type": str(type),
        "status": str(status),
        "observedGeneration": observed_generation,
        "lastTransitionTime": previous["lastTransitionTime"] if unchanged and previous else rfc3339(now),
        "reason": str(reason),
        "message": message,
    }
    if previous is None:
        return [*(dict(c) for c in conditions), condition]
    return [condition if c is previous else dict(c) for c in conditions]


def set_conditions(
    conditions: Sequence[Mapping[str, Any]],
    decided: Iterable[DecidedCondition],
    observed_generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """set_condition for each decided condition, in order."""
    result = [dict(c) for c in conditions]
    for item in decided:
        result = set_condition(
            result, item.type, item.status, item.reason, item.message, observed_generation, now
        )
    return result


def conditions_equal_ignoring_time(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two condition lists say the same (order and lastTransitionTime aside): no write needed."""

    def key(conditions: Sequence[Mapping[str, Any]]) -> dict[Any, dict[str, Any]]:
        return {c.get("type"): {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions}

    return len(a) == len(b) and key(a) == key(b)


@dataclass(frozen=True)
class ObservedPod:
    """Facts about one Triton pod."""

    name: str
    ready: bool
    # The scheduler's message when PodScheduled is False with reason Unschedulable.
    unschedulable_message: str | None = None
    # The scheduler only waits for the pod's PersistentVolumeClaims to be bound (its "unbound immediate
    # PersistentVolumeClaims"): a fresh server's normal first second, while its model PVC is provisioned.
    waits_for_claim: bool = False
    # The tritonserver container's waiting state (ErrImagePull, CrashLoopBackOff, CreateContainerConfigError).
    waiting_reason: str | None = None
    waiting_message: str | None = None
    restart_count: int = 0
    # In CrashLoopBackOff, or started again after a recent failed run and not ready yet.
    crash_looping: bool = False
    # Triton's own error text for a pod that is not ready (e.g. a failed model load).
    triton_message: str | None = None
    # Triton answers, and the operator is loading the server's models into it (its readiness gate).
    loading_models: bool = False
    # How long the scheduler has said Unschedulable (since PodScheduled turned False), in seconds.
    unschedulable_for_s: float = 0.0


@dataclass(frozen=True)
class ObservedServerState:
    """What the operator saw of a TritonServer's children."""

    # metadata.generation of the TritonServer whose children were last applied successfully.
    applied_generation: int
    deployment_found: bool
    deployment_generation: int = 0
    deployment_observed_generation: int = 0
    desired_replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    # The Deployment's Progressing condition has reason ProgressDeadlineExceeded.
    progress_deadline_exceeded: bool = False
    # The Deployment controller has said its current template rolled out (Progressing reason
    # NewReplicaSetAvailable). Until then a fresh server's starting pods are progress, not a problem.
    deployment_complete: bool = True
    pods: tuple[ObservedPod, ...] = ()
    # Referenced objects that do not exist, as "Kind/name" (Secret/ngc, PersistentVolumeClaim/models).
    missing_references: tuple[str, ...] = ()
    # The model-repository claim is Pending and was created less than CLAIM_BIND_GRACE_S ago: pods the
    # scheduler holds for it are starting, not stuck.
    claim_binding: bool = False
    # Under spec.autoscaling, its minReplicas: the autoscaler adding pods is the pool at work, not the
    # pool unready, so Ready needs this many ready (and the template rolled out), not every desired one.
    autoscaled_floor: int | None = None


_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


# How long a Pending model claim is normal provisioning. Past it, pods held for the claim are a problem
# (a provisioner that never binds, a class nothing serves): Degraded, with the scheduler's words.
CLAIM_BIND_GRACE_S = 120.0


def _pod_problem(pod: ObservedPod, claim_binding: bool = False) -> tuple[Reason, str] | None:
    """Why a not-ready pod is stuck, as (reason, message), or None when it is merely starting."""
    if pod.ready:
        return None
    detail = pod.waiting_message or pod.waiting_reason or ""
    if pod.unschedulable_message and not (pod.waits_for_claim and claim_binding):
        return Reason.UNSCHEDULABLE, f"cannot be scheduled: {pod.unschedulable_message}"
    if pod.waiting_reason == "CreateContainerConfigError":
        return Reason.MISSING_REFERENCE, f"cannot start: {detail}"
    if pod.waiting_reason in _IMAGE_PULL:
        return Reason.IMAGE_PULL_FAILED, f"cannot pull its image: {detail}"
    if pod.crash_looping:
        last = f": {pod.triton_message}" if pod.triton_message else ""
        return Reason.CRASH_LOOPING, f"keeps crashing ({pod.restart_count} restarts){last}"
    if pod.triton_message:
        return Reason.TRITON_ERROR, f"Triton is not ready: {pod.triton_message}"
    return None


# Most actionable first: the first problem names Ready's and Degraded's reason.
_PRIORITY = [
    Reason.MISSING_REFERENCE,
    Reason.UNSCHEDULABLE,
    Reason.IMAGE_PULL_FAILED,
    Reason.CRASH_LOOPING,
    Reason.PROGRESS_DEADLINE_EXCEEDED,
    Reason.TRITON_ERROR,
]


def _problems(observed: ObservedServerState) -> list[tuple[Reason, str]]:
    """Every problem observed, one per reason, most actionable first."""
    found: dict[Reason, list[str]] = {}
    if observed.missing_references:
        refs = ", ".join(observed.missing_references)
        found[Reason.MISSING_REFERENCE] = [
            f"{refs} not found; create it or remove the reference from the spec"
        ]
    by_reason: dict[Reason, list[tuple[str, str]]] = {}
    for pod in observed.pods:
        problem = _pod_problem(pod, observed.claim_binding)
        if problem is not None:
            by_reason.setdefault(problem[0], []).append((pod.name, problem[1]))
    for reason, pods in by_reason.items():
        name, text = pods[0]
        more = f" (and {len(pods) - 1} more)" if len(pods) > 1 else ""
        found.setdefault(reason, []).append(f"pod {name}{more} {text}")
    if observed.progress_deadline_exceeded:
        found[Reason.PROGRESS_DEADLINE_EXCEEDED] = ["the Deployment made no progress within its deadline"]
    return [(reason, "; ".join(found[reason])) for reason in _PRIORITY if reason in found]


def _serving_needed(observed: ObservedServerState) -> int:
    """How many replicas must serve for Ready: every desired one, or under autoscaling its floor."""
    desired = observed.desired_replicas
    return desired if observed.autoscaled_floor is None else min(desired, observed.autoscaled_floor)


def _rollout_done(observed: ObservedServerState, generation: int) -> bool:
    """Whether the current generation is applied, every desired replica runs its template, and enough of
    them are ready and available (every one, or under autoscaling its floor)."""
    needed = _serving_needed(observed)
    return (
        observed.applied_generation >= generation
        and observed.deployment_found
        and observed.deployment_observed_generation >= observed.deployment_generation
        and observed.updated_replicas >= observed.desired_replicas
        and observed.ready_replicas >= needed
        and observed.available_replicas >= needed
    )


def _updated(observed: ObservedServerState) -> bool:
    """Whether the current template has rolled out: the Deployment has seen its spec, every desired
    replica runs that template, and the Deployment controller once saw them all available."""
    return (
        observed.deployment_observed_generation >= observed.deployment_generation
        and observed.updated_replicas >= observed.desired_replicas
        and observed.deployment_complete
    )


def _progress_message(observed: ObservedServerState) -> str:
    """Replica counts in one phrase."""
    return (
        f"{observed.ready_replicas} of {observed.desired_replicas} replicas ready, "
        f"{observed.updated_replicas} updated"
    )


def server_conditions(observed: ObservedServerState, generation: int) -> list[DecidedCondition]:
    """Ready, Available, Progressing and Degraded of a TritonServer at `generation`, from observed facts."""
    problems = _problems(observed)
    done = _rollout_done(observed, generation)
    desired = observed.desired_replicas
    counts = _progress_message(observed)
    if observed.applied_generation < generation:
        pending: tuple[Reason, str] = (
            Reason.RECONCILING,
            f"generation {generation} is not applied yet (children reflect {observed.applied_generation})",
        )
    elif not observed.deployment_found:
        pending = (Reason.RECONCILING, "the Deployment does not exist yet")
    elif _updated(observed):
        # Every replica runs this generation's template: nothing is rolling out, some are just not ready.
        unready = [
            f"{p.name} (loading models)" if p.loading_models else p.name for p in observed.pods if not p.ready
        ]
        which = f" (not ready: {', '.join(unready)})" if unready else ""
        pending = (Reason.REPLICAS_NOT_READY, f"{counts}{which}")
    else:
        pending = (Reason.ROLLING_OUT, f"rolling out generation {generation}: {counts}")

    if done and desired == 0:
        ready = DecidedCondition(
            ConditionType.READY, ConditionStatus.TRUE, Reason.SCALED_TO_ZERO, "Scaled to zero."
        )
    elif done and observed.ready_replicas < desired:  # under autoscaling: new pods starting
        ready = DecidedCondition(
            ConditionType.READY,
            ConditionStatus.TRUE,
            Reason.SCALING_UP,
            f"{counts}: the autoscaler's new replicas are starting; "
            f"at least {_serving_needed(observed)} serve.",
        )
    elif done:
        ready = DecidedCondition(
            ConditionType.READY,
            ConditionStatus.TRUE,
            Reason.ALL_REPLICAS_READY,
            f"All {desired} replicas ready.",
        )
    elif problems:
        reason, text = problems[0]
        ready = DecidedCondition(ConditionType.READY, ConditionStatus.FALSE, reason, f"{counts}: {text}")
    else:
        ready = DecidedCondition(ConditionType.READY, ConditionStatus.FALSE, pending[0], pending[1])

    if observed.available_replicas > 0:
        available = DecidedCondition(
            ConditionType.AVAILABLE,
            ConditionStatus.TRUE,
            Reason.MINIMUM_REPLICAS_AVAILABLE,
            f"{observed.available_replicas} of {desired} replicas serve traffic.",
        )
    elif desired == 0 and observed.deployment_found:
        available = DecidedCondition(
            ConditionType.AVAILABLE,
            ConditionStatus.FALSE,
            Reason.SCALED_TO_ZERO,
            "Scaled to zero: nothing serves.",
        )
    else:
        detail = f": {problems[0][1]}" if problems else "."
        available = DecidedCondition(
            ConditionType.AVAILABLE,
            ConditionStatus.FALSE,
            Reason.NO_REPLICAS_AVAILABLE,
            f"No replica serves{detail}",
        )

    if observed.progress_deadline_exceeded:
        # kstatus reads Progressing=False with this reason as "stalled".
        progressing = DecidedCondition(
            ConditionType.PROGRESSING,
            ConditionStatus.FALSE,
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"Rollout stalled: {counts}.",
        )
    elif done or pending[0] == Reason.REPLICAS_NOT_READY:
        # Rolled out even if some replica is not ready now: Ready and Degraded say that, not Progressing.
        progressing = DecidedCondition(
            ConditionType.PROGRESSING,
            ConditionStatus.FALSE,
            Reason.ROLLOUT_COMPLETE,
            f"Generation {generation} rolled out.",
        )
    else:
        progressing = DecidedCondition(
            ConditionType.PROGRESSING, ConditionStatus.TRUE, pending[0], pending[1]
        )

    if problems:
        degraded = DecidedCondition(
            ConditionType.DEGRADED,
            ConditionStatus.TRUE,
            problems[0][0],
            "; ".join(text for _, text in problems),
        )
    else:
        degraded = DecidedCondition(
            ConditionType.DEGRADED, ConditionStatus.FALSE, Reason.AS_EXPECTED, "No problems observed."
        )
    return [ready, available, progressing, degraded]


# --- kstatus: Reconciling and Stalled ----------------------------------------------------------------
# kstatus (sigs.k8s.io/cli-utils/pkg/kstatus, which Flux, kpt and cli-utils judge objects with) reads a
# custom resource so (v0.37.2, status.Compute): InProgress while status.observedGeneration differs from
# metadata.generation; then, in list order, InProgress at the first Reconciling=True and Failed at the
# first Stalled=True; then InProgress while Ready is not True; else Current. Ready, Progressing and
# Degraded alone could not say "stuck": a rolled-back canary or a source that does not exist read
# InProgress for ever, and Flux's health check waited out its timeout instead of failing with the reason.

# How long pods may be Unschedulable before that needs a change (a GPU request no node can fit): long
# enough for a node autoscaler to add a node; kstatus itself fails a lone Pod after 15 s.
UNSCHEDULABLE_STALL_S = 120.0
# A Triton that crashed this often (and again recently) is in a loop a change must end (bad arguments,
# too little memory); one killed once or twice is a fault that passes.
CRASH_LOOP_STALL_RESTARTS = 3
# Image references the kubelet will never pull (a pull that failed is retried: a registry can come back,
# so ErrImagePull/ImagePullBackOff stall only through the Deployment's progress deadline).
_IMAGE_NEVER_PULLED = {"InvalidImageName", "ErrImageNeverPull"}


def server_stuck(observed: ObservedServerState) -> bool:
    """Whether a TritonServer has a problem no retry ends, only a change to its spec or to an object it
    names: a missing Secret or claim, pods Unschedulable past UNSCHEDULABLE_STALL_S, a crash loop, an
    image that can never be pulled, or a Deployment past its progress deadline."""
    if observed.missing_references or observed.progress_deadline_exceeded:
        return True
    for pod in observed.pods:
        problem = _pod_problem(pod, observed.claim_binding)
        if problem is None:
            continue
        reason = problem[0]
        if (
            reason == Reason.MISSING_REFERENCE
            or (reason == Reason.UNSCHEDULABLE and pod.unschedulable_for_s >= UNSCHEDULABLE_STALL_S)
            or (reason == Reason.CRASH_LOOPING and pod.restart_count >= CRASH_LOOP_STALL_RESTARTS)
            or (reason == Reason.IMAGE_PULL_FAILED and pod.waiting_reason in _IMAGE_NEVER_PULLED)
        ):
            return True
    return False


NOT_STALLED_MESSAGE = "No problem observed that only a change to the spec (or an object it names) can end."


def with_kstatus(decided: Sequence[DecidedCondition], stuck: bool) -> list[DecidedCondition]:
    """`decided` (any Reconciling and Stalled in it left out) followed by Reconciling and Stalled, derived
    from its Ready, Progressing and Degraded:

    - Stalled=True when the object is not Ready and `stuck` (its caller's facts say no retry ends the
      problem: server_stuck, observe.model.model_stuck, a rollout that rolled back or was aborted), with
      Degraded's reason and message (Ready's when Degraded is not True);
    - otherwise Reconciling=True while it is not Ready (with Ready's reason and message: kstatus's own
      rule for Ready=False says the same) or while Progressing is True (with Progressing's);
    - a Ready object that is not progressing has both False.

    Never both True (kstatus would take whichever comes first). Ready, Progressing and Degraded are
    returned as decided: these two only restate them for kstatus.
    """
    kept = [c for c in decided if c.type not in (ConditionType.RECONCILING, ConditionType.STALLED)]
    by_type = {c.type: c for c in kept}
    ready = by_type.get(ConditionType.READY)
    progressing = by_type.get(ConditionType.PROGRESSING)
    degraded = by_type.get(ConditionType.DEGRADED)
    is_ready = ready is not None and ready.status == ConditionStatus.TRUE
    rolling = progressing is not None and progressing.status == ConditionStatus.TRUE
    not_stalled = DecidedCondition(
        ConditionType.STALLED, ConditionStatus.FALSE, Reason.AS_EXPECTED, NOT_STALLED_MESSAGE
    )
    if stuck and not is_ready:
        cause = degraded if degraded is not None and degraded.status == ConditionStatus.TRUE else ready
        reason, message = (cause.reason, cause.message) if cause else (Reason.RECONCILING, "Not ready.")
        stalled = DecidedCondition(ConditionType.STALLED, ConditionStatus.TRUE, reason, message)
        reconciling = DecidedCondition(
            ConditionType.RECONCILING,
            ConditionStatus.FALSE,
            reason,
            "Stalled (see the Stalled condition): nothing more happens until the spec, or an object it "
            "names, changes.",
        )
        return [*kept, reconciling, stalled]
    if rolling or not is_ready:
        why = progressing if is_ready else ready  # Ready's words say what is not ready, problems included
        reason, message = (why.reason, why.message) if why else (Reason.RECONCILING, "Not ready yet.")
        reconciling = DecidedCondition(ConditionType.RECONCILING, ConditionStatus.TRUE, reason, message)
        return [*kept, reconciling, not_stalled]
    assert ready is not None  # is_ready
    reconciling = DecidedCondition(
        ConditionType.RECONCILING, ConditionStatus.FALSE, ready.reason, ready.message
    )
    return [*kept, reconciling, not_stalled]
