"""Both kinds in every state kstatus must read right, built with the operator's own status functions.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux, kpt and cli-utils judge objects with) only sees the
object: each state here is the object the operator writes in it, its conditions decided by the functions
the reconcilers call (observe_server/server_status_conditions, model_status_conditions over a routing
outcome from Routing.canary_pass, invalid_model_conditions) and stamped by set_conditions.
tests/unit/test_kstatus.py checks them against kstatus's rules as a table; tests/integration/test_kstatus.py
against kstatus itself (tests/support/kstatus/main.go).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from triton_operator.api.common import API_VERSION
from triton_operator.api.tritonmodel import ReplicaState, TritonModelSpec
from triton_operator.conditions import (
    DecidedCondition,
    ObservedPod,
    ObservedServerState,
    set_conditions,
)
from triton_operator.observe.model import (
    ObservedModel,
    ReplicaFacts,
    invalid_model_conditions,
    model_status_conditions,
)
from triton_operator.observe.rollout import TrafficOutcome
from triton_operator.observe.server import ApplyFailure, observe_server, server_status_conditions
from triton_operator.observe.staging import StagingOutcome, staging_outcome
from triton_operator.reconcile.traffic import CanaryInputs, canary_pass, read_state
from triton_operator.render.labels import APPLIED_GENERATION_ANNOTATION
from triton_operator.rollout.spec import command_of, plan_of
from triton_operator.rollout.state import Phase, RolloutReason, RolloutState, settled

GEN = 3
CURRENT, IN_PROGRESS, FAILED = "Current", "InProgress", "Failed"


@dataclass(frozen=True)
class KState:
    """One state: the object the operator writes in it, and how kstatus must read it."""

    name: str
    obj: dict[str, Any]
    # kstatus's verdict: Current, InProgress or Failed.
    expected: str
    # Reconciling's and Stalled's status ("True"/"False") as the operator writes them.
    reconciling: str
    stalled: str


def _object(
    kind: str, name: str, decided: Sequence[DecidedCondition], now: datetime, observed_generation: int = GEN
) -> dict[str, Any]:
    conditions = set_conditions([], decided, observed_generation, now)
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "generation": GEN},
        "status": {"observedGeneration": observed_generation, "conditions": conditions},
    }


# --- TritonServer ----------------------------------------------------------------------------------

HEALTHY = ObservedServerState(
    applied_generation=GEN,
    deployment_found=True,
    deployment_generation=2,
    deployment_observed_generation=2,
    desired_replicas=2,
    updated_replicas=2,
    ready_replicas=2,
    available_replicas=2,
    pods=(ObservedPod("triton-a", ready=True), ObservedPod("triton-b", ready=True)),
)
STARTING = replace(
    HEALTHY,
    ready_replicas=0,
    available_replicas=0,
    deployment_complete=False,
    pods=(ObservedPod("triton-a", ready=False), ObservedPod("triton-b", ready=False)),
)
ROLLING = replace(
    HEALTHY,
    updated_replicas=1,
    ready_replicas=1,
    available_replicas=1,
    deployment_complete=False,
    pods=(ObservedPod("triton-a", ready=True), ObservedPod("triton-c", ready=False)),
)
NO_GPU = "0/3 nodes are available: 2 Insufficient nvidia.com/gpu, 1 node(s) didn't match node selector."


def unschedulable_server(since: datetime, now: datetime) -> ObservedServerState:
    """A server whose one pod the scheduler has said Unschedulable about since `since` (from objects as
    the API returns them: observe_server reads the pod's PodScheduled condition)."""
    deployment = {
        "metadata": {"generation": 1, "annotations": {APPLIED_GENERATION_ANNOTATION: str(GEN)}},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}],
        },
    }
    stamp = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    pod = {
        "metadata": {"name": "too-big-0", "creationTimestamp": stamp},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": NO_GPU,
                    "lastTransitionTime": stamp,
                }
            ],
        },
    }
    return observe_server(deployment, [pod], {}, now=now)


def crash_looping(restarts: int) -> ObservedServerState:
    pod = ObservedPod(
        "triton-b",
        ready=False,
        waiting_reason="CrashLoopBackOff",
        crash_looping=True,
        restart_count=restarts,
        triton_message="exit code 1: failed to allocate CUDA memory",
    )
    return replace(HEALTHY, ready_replicas=1, available_replicas=1, pods=(HEALTHY.pods[0], pod))


# How the operator's two kstatus conditions read in each verdict: (Reconciling, Stalled).
CONDITIONS_OF = {CURRENT: ("False", "False"), IN_PROGRESS: ("True", "False"), FAILED: ("False", "True")}


def server_states(now: datetime) -> list[KState]:
    def state(
        name: str, observed: ObservedServerState, expected: str, failure: ApplyFailure | None = None
    ) -> KState:
        decided = server_status_conditions(observed, GEN, failure)
        obj = _object("TritonServer", name, decided, now)
        return KState(f"TritonServer/{name}", obj, expected, *CONDITIONS_OF[expected])

    missing_secret = replace(
        ROLLING,
        missing_references=("Secret/ngc-credentials",),
        pods=(
            ObservedPod(
                "triton-c",
                False,
                waiting_reason="CreateContainerConfigError",
                waiting_message='secret "ngc-credentials" not found',
            ),
        ),
    )
    lost_replica = replace(
        HEALTHY,
        ready_replicas=1,
        available_replicas=1,
        pods=(ObservedPod("triton-a", True), ObservedPod("triton-b", False)),
    )
    zero = replace(
        HEALTHY, desired_replicas=0, updated_replicas=0, ready_replicas=0, available_replicas=0, pods=()
    )
    not_applied = replace(HEALTHY, applied_generation=GEN - 1)
    deadline = replace(ROLLING, progress_deadline_exceeded=True)
    waiting = unschedulable_server(now - timedelta(seconds=30), now)
    stuck = unschedulable_server(now - timedelta(seconds=300), now)
    invalid = ApplyFailure(GEN, "ApplyFailed", "applying children failed: 422 spec.x: Invalid value")
    conflict = ApplyFailure(GEN, "ApplyFailed", "applying children failed: 409 conflict", permanent=False)
    states = [
        state("serving", HEALTHY, CURRENT),
        state("scaled-to-zero", zero, CURRENT),
        state("pods-starting", STARTING, IN_PROGRESS),
        state("rolling", ROLLING, IN_PROGRESS),
        state("generation-not-applied", not_applied, IN_PROGRESS),
        state("replica-lost-readiness", lost_replica, IN_PROGRESS),
        state("unschedulable-in-grace", waiting, IN_PROGRESS),
        state("unschedulable", stuck, FAILED),
        state("missing-secret", missing_secret, FAILED),
        state("crashed-once", crash_looping(1), IN_PROGRESS),
        state("crash-looping", crash_looping(5), FAILED),
        state("progress-deadline-exceeded", deadline, FAILED),
        state("apply-refused", HEALTHY, FAILED, failure=invalid),
        state("apply-conflict", HEALTHY, IN_PROGRESS, failure=conflict),
    ]
    # Edited, not observed yet: the conditions are the last generation's (served), kstatus waits.
    stale = _object("TritonServer", "edited", server_status_conditions(HEALTHY, GEN - 1), now, GEN - 1)
    states.append(KState("TritonServer/new-generation-not-observed", stale, IN_PROGRESS, "False", "False"))
    return states


# --- TritonModel -----------------------------------------------------------------------------------

JOB_1, JOB_2 = "mnist-stage-1-5c1e", "mnist-stage-2-9a7f"
UNAVAILABLE = ReplicaState.UNAVAILABLE


def replica(
    pod: str, state: ReplicaState = ReplicaState.READY, *, current: bool = True, load_error: str | None = None
) -> ReplicaFacts:
    return ReplicaFacts(pod, "10.244.1.7", True, state, current=current, load_error=load_error)


SERVED = ObservedModel(
    server="triton",
    namespace="default",
    version=1,
    wanted_job=JOB_1,
    staged_job=JOB_1,
    staged_version=1,
    replicas=(replica("triton-a"), replica("triton-b")),
    wanted_replicas=2,
)


def failed_staging(reason_line: str) -> StagingOutcome:
    """What staging_outcome makes of a failed staging Job whose program ended with `reason_line`."""
    job = {
        "metadata": {"name": JOB_2},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }
    pod = {
        "metadata": {"name": f"{JOB_2}-x7k2p", "creationTimestamp": "2026-12-01T10:00:00Z"},
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 3, "message": reason_line}}}]},
    }
    return staging_outcome(job, [pod])


def missing_secret_staging() -> StagingOutcome:
    job = {"metadata": {"name": JOB_2}, "status": {}}
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "s3-credentials" not found'}
    pod = {
        "metadata": {"name": f"{JOB_2}-q9d4z", "creationTimestamp": "2026-12-01T10:00:00Z"},
        "status": {"containerStatuses": [{"state": {"waiting": waiting}}]},
    }
    return staging_outcome(job, [pod])


SOURCE_NOT_FOUND = "SourceNotFound: s3://models/mnist/missing/ has no manifest.json; publish the model there"


def canary_spec(version: int) -> TritonModelSpec:
    return TritonModelSpec.model_validate(
        {
            "serverRef": {"name": "triton"},
            "version": version,
            "source": {"s3": {"bucket": "models", "prefix": f"mnist/{version}"}},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "pauseSeconds": 60}, {"weight": 100}],
                "analysis": {"intervalSeconds": 10, "minRequests": 100, "maxFailureRatio": 0.05},
            },
        }
    )


def routed(
    spec_version: int,
    state: RolloutState,
    now: datetime,
    *,
    ready_everywhere: bool = True,
    command: str | None = None,
) -> TrafficOutcome:
    """The outcome of one pass of the engine (canary_pass, as the reconciler calls it) over a status
    holding `state`, no metrics yet."""
    annotations = {"tritonoperator.dev/rollout": command} if command else {}
    spec = canary_spec(spec_version)
    plan, limits = plan_of(spec)
    _, _, outcome = canary_pass(
        CanaryInputs(
            plan,
            limits,
            read_state({"rollout": state.to_status()}),
            requested=str(spec.version),
            ready=ready_everywhere,
            waiting_for="its files are staging or loading",
            applied=False,
            counters={},
            window=None,
            command=command_of(annotations),
            retired=None,
            now=now,
            monotonic=0.0,
        )
    )
    return outcome


def model_states(now: datetime) -> list[KState]:
    def state(
        name: str, observed: ObservedModel, expected: str, outcome: TrafficOutcome | None = None
    ) -> KState:
        obj = _object("TritonModel", name, model_status_conditions(observed, outcome), now)
        return KState(f"TritonModel/{name}", obj, expected, *CONDITIONS_OF[expected])

    v2 = replace(SERVED, version=2, wanted_job=JOB_2)  # the spec asks for version 2; version 1 is staged
    v2_staged = replace(SERVED, version=2, wanted_job=JOB_2, staged_job=JOB_2, staged_version=2)
    started = now - timedelta(seconds=20)
    running = RolloutState(Phase.PROGRESSING, "1", "2", 0, started)
    promoted = RolloutState(
        Phase.PROMOTED, "1", "2", 1, started, None, "", None, RolloutReason.PROMOTED, "promoted version 2"
    )
    rolled_back = RolloutState(
        Phase.ROLLED_BACK, "1", "2", 0, started, None, "", None, RolloutReason.ROLLED_BACK,
        "rolled back to version 1 at step 1/2 (50%): failure ratio 0.500 > 0.050 (60 of 120 requests)",
    )  # fmt: skip
    refused = "unexpected shape for input 'x'"
    one_failed = (replica("triton-a"), replica("triton-b", UNAVAILABLE, current=False, load_error="OOM"))
    all_failed = tuple(replica(p, UNAVAILABLE, current=False, load_error=refused) for p in ("a", "b"))
    loading = (replica("triton-a"), replica("triton-b", ReplicaState.LOADING, current=False))
    source_missing = failed_staging(SOURCE_NOT_FOUND)
    never_staged = replace(v2, staged_job=None, staged_version=None, replicas=())
    invalid_server = replace(SERVED, server_problem="TritonServer triton has an invalid spec")
    canary_loading = routed(2, settled("1", started), now, ready_everywhere=False)
    states = [
        state("served", SERVED, CURRENT),
        state("staging", replace(SERVED, staged_job=None, staged_version=None, replicas=()), IN_PROGRESS),
        state("loading", replace(SERVED, replicas=loading), IN_PROGRESS),
        state("waiting-for-server-replicas", replace(SERVED, replicas=()), IN_PROGRESS),
        state("waiting-for-server", replace(SERVED, server_found=False, young=True), IN_PROGRESS),
        state("server-missing", replace(SERVED, server_found=False), FAILED),
        state("server-invalid", invalid_server, FAILED),
        state("staging-failed-source-missing", replace(never_staged, staging=source_missing), FAILED),
        state("new-version-staging-failed-old-serving", replace(v2, staging=source_missing), FAILED),
        state(
            "staging-digest-mismatch", replace(v2, staging=failed_staging("DigestMismatch: differs")), FAILED
        ),
        state("staging-credentials-missing", replace(v2, staging=missing_secret_staging()), FAILED),
        state("load-failed-everywhere", replace(SERVED, replicas=all_failed), FAILED),
        state("load-failed-on-one-pod", replace(SERVED, replicas=one_failed), IN_PROGRESS),
        # Routed models (strategy Canary): the rollout's outcome over the model's own conditions.
        state("canary-loading", v2, IN_PROGRESS, canary_loading),
        state("canary-progressing", v2_staged, IN_PROGRESS, routed(2, running, now)),
        state("canary-promoted", v2_staged, CURRENT, routed(2, promoted, now)),
        state("canary-rolled-back", v2_staged, FAILED, routed(2, rolled_back, now)),
        state("canary-aborted", v2_staged, FAILED, routed(2, running, now, command="abort 1")),
        state("canary-withdrawn", SERVED, CURRENT, routed(1, running, now)),
        state("canary-staging-failed", replace(v2, staging=source_missing), FAILED, canary_loading),
    ]
    invalid = invalid_model_conditions("spec.version: Input should be greater than or equal to 1")
    bad = _object("TritonModel", "invalid-spec", invalid, now)
    states.append(KState("TritonModel/invalid-spec", bad, FAILED, *CONDITIONS_OF[FAILED]))
    stale = _object("TritonModel", "edited", model_status_conditions(SERVED), now, GEN - 1)
    states.append(KState("TritonModel/new-generation-not-observed", stale, IN_PROGRESS, "False", "False"))
    return states


def all_states(now: datetime | None = None) -> list[KState]:
    """Every state of both kinds, at `now` (default: the current time, as Unschedulable's grace counts)."""
    when = now or datetime.now(UTC)
    return [*server_states(when), *model_states(when)]


# --- kstatus's rules, transcribed ---------------------------------------------------------------------


def kstatus_rules(obj: dict[str, Any]) -> tuple[str, str]:
    """kstatus's status.Compute (cli-utils v0.37.2) for a custom resource, as a table of its rules in
    order: (status, message). tests/integration/test_kstatus.py checks this transcription against
    kstatus itself on every state."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating", "Resource scheduled for deletion"
    observed = status.get("observedGeneration")
    if "generation" in meta and observed is not None and observed != meta["generation"]:
        said = f"{obj['kind']} generation is {meta['generation']}"
        return IN_PROGRESS, f"{said}, but latest observed generation is {observed}"
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    for cond in conditions:  # the first Reconciling=True or Stalled=True, in list order
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return IN_PROGRESS, str(cond.get("message") or "")
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return FAILED, str(cond.get("message") or "")
    for cond in conditions:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return CURRENT, "Resource is Ready"
            return IN_PROGRESS, str(cond.get("message") or "")
    return CURRENT, "Resource is current"
