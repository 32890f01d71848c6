"""Conditions: metav1 semantics of set_condition; the table of observed states -> TritonServer conditions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from triton_operator.api.common import Condition, ConditionStatus
from triton_operator.conditions import (
    DecidedCondition,
    ObservedPod,
    ObservedServerState,
    Reason,
    conditions_equal_ignoring_time,
    rfc3339,
    server_conditions,
    set_condition,
    set_conditions,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(minutes=7)
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


def test_first_set_stamps_now_and_generation() -> None:
    conditions = set_condition([], "Ready", FALSE, Reason.ROLLING_OUT, "0 of 1 ready", 4, T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "observedGeneration": 4,
            "lastTransitionTime": "2025-01-02T03:04:05Z",
            "reason": "RollingOut",
            "message": "0 of 1 ready",
        }
    ]
    Condition.model_validate(conditions[0])  # the shape the CRD's status schema accepts


def test_last_transition_time_changes_only_when_status_flips() -> None:
    first = set_condition([], "Ready", FALSE, Reason.ROLLING_OUT, "0 of 2 ready", 1, T0)
    same_status = set_condition(first, "Ready", FALSE, Reason.UNSCHEDULABLE, "1 of 2 ready", 2, T1)
    assert same_status[0]["lastTransitionTime"] == rfc3339(T0)
    assert (same_status[0]["reason"], same_status[0]["message"], same_status[0]["observedGeneration"]) == (
        "Unschedulable",
        "1 of 2 ready",
        2,
    )
    flipped = set_condition(same_status, "Ready", TRUE, Reason.ALL_REPLICAS_READY, "All 2 ready.", 2, T1)
    assert flipped[0]["lastTransitionTime"] == rfc3339(T1)


def test_other_conditions_and_order_are_kept_and_input_is_not_mutated() -> None:
    start = set_conditions(
        [],
        [
            DecidedCondition("Ready", FALSE, Reason.ROLLING_OUT, "a"),
            DecidedCondition("Degraded", FALSE, Reason.AS_EXPECTED, "b"),
        ],
        1,
        T0,
    )
    snapshot = [dict(c) for c in start]
    updated = set_condition(start, "Degraded", TRUE, Reason.CRASH_LOOPING, "c", 1, T1)
    assert [c["type"] for c in updated] == ["Ready", "Degraded"]
    assert updated[0] == start[0]
    assert start == snapshot


def test_reasons_must_be_camel_case() -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], "Ready", TRUE, "", "x", 1, T0)
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], "Ready", TRUE, "all replicas ready", "x", 1, T0)
    assert all(reason.value[0].isupper() and reason.value.isalnum() for reason in Reason)


def test_time_is_utc_rfc3339() -> None:
    assert (
        rfc3339(datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))) == "2025-01-02T03:04:05Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        rfc3339(datetime(2025, 1, 2))


def test_equal_ignoring_time() -> None:
    a = set_condition([], "Ready", TRUE, Reason.ALL_REPLICAS_READY, "ok", 1, T0)
    b = [dict(a[0], lastTransitionTime=rfc3339(T1))]
    assert conditions_equal_ignoring_time(a, b)
    assert not conditions_equal_ignoring_time(a, [dict(a[0], message="different")])
    assert not conditions_equal_ignoring_time(a, [dict(a[0], observedGeneration=2)])
    assert not conditions_equal_ignoring_time(a, [])


GEN = 5
HEALTHY = ObservedServerState(
    applied_generation=GEN,
    deployment_found=True,
    deployment_generation=9,
    deployment_observed_generation=9,
    desired_replicas=2,
    updated_replicas=2,
    ready_replicas=2,
    available_replicas=2,
    pods=(ObservedPod("llm-a", ready=True), ObservedPod("llm-b", ready=True)),
)
ROLLING = replace(
    HEALTHY,
    updated_replicas=1,
    ready_replicas=1,
    available_replicas=1,
    pods=(ObservedPod("llm-a", ready=True), ObservedPod("llm-c", ready=False)),
)
UNSCHEDULABLE_MSG = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
UNBOUND_CLAIM_MSG = (
    "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are "
    "available: 3 Preemption is not helpful for scheduling."
)
FRESH_WAITING_FOR_CLAIM = ObservedServerState(
    deployment_complete=False,
    applied_generation=GEN,
    deployment_found=True,
    deployment_generation=9,
    deployment_observed_generation=9,
    desired_replicas=1,
    updated_replicas=1,
    pods=(ObservedPod("llm-a", False, UNBOUND_CLAIM_MSG, waits_for_claim=True),),
)

# (observed, expected {type: (status, reason)}, fragments expected in Ready's message)
CASES = {
    "healthy": (
        HEALTHY,
        {
            "Ready": (TRUE, "AllReplicasReady"),
            "Available": (TRUE, "MinimumReplicasAvailable"),
            "Progressing": (FALSE, "RolloutComplete"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["All 2 replicas ready"],
    ),
    # Under spec.autoscaling (minReplicas 2) the HPA asked for 4: two new pods start. The pool serves at
    # its floor, so it stays Ready (Argo CD Healthy through a ramp), saying so; no rollout in progress.
    "autoscaler-adding-pods": (
        replace(
            HEALTHY,
            autoscaled_floor=2,
            desired_replicas=4,
            updated_replicas=4,
            pods=(*HEALTHY.pods, ObservedPod("llm-c", ready=False), ObservedPod("llm-d", ready=False)),
        ),
        {
            "Ready": (TRUE, "ScalingUp"),
            "Available": (TRUE, "MinimumReplicasAvailable"),
            "Progressing": (FALSE, "RolloutComplete"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["2 of 4 replicas ready", "the autoscaler's new replicas are starting; at least 2 serve"],
    ),
    "autoscaled-pool-below-its-floor": (
        replace(
            HEALTHY,
            autoscaled_floor=3,
            desired_replicas=4,
            updated_replicas=4,
            pods=(*HEALTHY.pods, ObservedPod("llm-c", ready=False), ObservedPod("llm-d", ready=False)),
        ),
        {"Ready": (FALSE, "ReplicasNotReady"), "Degraded": (FALSE, "AsExpected")},
        ["2 of 4 replicas ready"],
    ),
    "autoscaled-template-rolling-out": (
        replace(ROLLING, autoscaled_floor=1),
        {"Ready": (FALSE, "RollingOut"), "Progressing": (TRUE, "RollingOut")},
        ["rolling out generation 5"],
    ),
    "autoscaled-all-ready": (
        replace(HEALTHY, autoscaled_floor=1),
        {"Ready": (TRUE, "AllReplicasReady")},
        ["All 2 replicas ready"],
    ),
    "new-generation-not-applied": (
        replace(HEALTHY, applied_generation=GEN - 1),
        {
            "Ready": (FALSE, "Reconciling"),
            "Available": (TRUE, "MinimumReplicasAvailable"),
            "Progressing": (TRUE, "Reconciling"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["generation 5 is not applied yet"],
    ),
    "deployment-controller-has-not-seen-the-update": (
        replace(HEALTHY, deployment_generation=10),
        {"Ready": (FALSE, "RollingOut"), "Progressing": (TRUE, "RollingOut")},
        ["rolling out generation 5"],
    ),
    "deployment-missing": (
        ObservedServerState(applied_generation=GEN, deployment_found=False, desired_replicas=1),
        {
            "Ready": (FALSE, "Reconciling"),
            "Available": (FALSE, "NoReplicasAvailable"),
            "Progressing": (TRUE, "Reconciling"),
        },
        ["does not exist yet"],
    ),
    "rolling-out-starting-pod": (
        ROLLING,
        {
            "Ready": (FALSE, "RollingOut"),
            "Available": (TRUE, "MinimumReplicasAvailable"),
            "Progressing": (TRUE, "RollingOut"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["1 of 2 replicas ready, 1 updated"],
    ),
    "rolled-out-then-a-replica-lost-readiness": (
        replace(
            HEALTHY,
            ready_replicas=1,
            available_replicas=1,
            pods=(ObservedPod("llm-a", ready=True), ObservedPod("llm-b", ready=False)),
        ),
        {
            "Ready": (FALSE, "ReplicasNotReady"),
            "Available": (TRUE, "MinimumReplicasAvailable"),
            "Progressing": (FALSE, "RolloutComplete"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["1 of 2 replicas ready", "not ready: llm-b"],
    ),
    "unschedulable": (
        replace(ROLLING, pods=(ObservedPod("llm-a", True), ObservedPod("llm-c", False, UNSCHEDULABLE_MSG))),
        {
            "Ready": (FALSE, "Unschedulable"),
            "Available": (TRUE, "MinimumReplicasAvailable"),
            "Progressing": (TRUE, "RollingOut"),
            "Degraded": (TRUE, "Unschedulable"),
        },
        ["pod llm-c cannot be scheduled", UNSCHEDULABLE_MSG],
    ),
    # Regression: every fresh deploy said Degraded=True for ~1 s while its new PVC was provisioned (Argo
    # CD reads Degraded first: notifications fired, sync waves failed).
    "fresh-server-while-its-claim-binds": (
        replace(FRESH_WAITING_FOR_CLAIM, claim_binding=True),
        {
            "Ready": (FALSE, "RollingOut"),
            "Available": (FALSE, "NoReplicasAvailable"),
            "Progressing": (TRUE, "RollingOut"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["0 of 1 replicas ready"],
    ),
    # A fresh server's pods starting: progress (Ready False for the reason it is Progressing, a Normal
    # Event), not "RolloutComplete" with replicas not ready (a Warning on every deploy).
    "fresh-server-pods-starting": (
        replace(
            HEALTHY,
            ready_replicas=0,
            available_replicas=0,
            deployment_complete=False,
            pods=(ObservedPod("llm-a", ready=False), ObservedPod("llm-b", ready=False)),
        ),
        {
            "Ready": (FALSE, "RollingOut"),
            "Progressing": (TRUE, "RollingOut"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["0 of 2 replicas ready, 2 updated"],
    ),
    "claim-unbound-past-the-grace": (
        FRESH_WAITING_FOR_CLAIM,
        {"Ready": (FALSE, "Unschedulable"), "Degraded": (TRUE, "Unschedulable")},
        ["pod llm-a cannot be scheduled", "unbound immediate PersistentVolumeClaims"],
    ),
    "binding-claim-does-not-excuse-other-scheduling-failures": (
        replace(
            FRESH_WAITING_FOR_CLAIM,
            claim_binding=True,
            pods=(ObservedPod("llm-a", False, UNSCHEDULABLE_MSG),),
        ),
        {"Ready": (FALSE, "Unschedulable"), "Degraded": (TRUE, "Unschedulable")},
        [UNSCHEDULABLE_MSG],
    ),
    "image-pull": (
        replace(
            ROLLING,
            pods=(
                ObservedPod(
                    "llm-c", False, waiting_reason="ImagePullBackOff", waiting_message="not found: x:bad"
                ),
                ObservedPod(
                    "llm-d", False, waiting_reason="ErrImagePull", waiting_message="not found: x:bad"
                ),
            ),
        ),
        {"Ready": (FALSE, "ImagePullFailed"), "Degraded": (TRUE, "ImagePullFailed")},
        ["pod llm-c (and 1 more) cannot pull its image: not found: x:bad"],
    ),
    "crash-loop-with-triton-error": (
        replace(
            HEALTHY,
            ready_replicas=1,
            available_replicas=1,
            pods=(
                ObservedPod("llm-a", True),
                ObservedPod(
                    "llm-b",
                    False,
                    waiting_reason="CrashLoopBackOff",
                    crash_looping=True,
                    restart_count=4,
                    triton_message="failed to load 'resnet': CUDA out of memory",
                ),
            ),
        ),
        {"Ready": (FALSE, "CrashLooping"), "Available": (TRUE, "MinimumReplicasAvailable")},
        ["keeps crashing (4 restarts)", "CUDA out of memory"],
    ),
    "triton-not-ready-with-its-own-message": (
        replace(
            HEALTHY,
            ready_replicas=1,
            available_replicas=1,
            pods=(
                ObservedPod("llm-a", True),
                ObservedPod(
                    "llm-b", False, triton_message="load failed for model 'bert': version 1 is UNAVAILABLE"
                ),
            ),
        ),
        {
            "Ready": (FALSE, "TritonError"),
            "Degraded": (TRUE, "TritonError"),
            "Progressing": (FALSE, "RolloutComplete"),  # every replica runs the template
        },
        ["pod llm-b Triton is not ready: load failed for model 'bert'"],
    ),
    "missing-secret-beats-pod-problems": (
        replace(
            ROLLING,
            missing_references=("Secret/ngc-credentials",),
            pods=(
                ObservedPod("llm-c", False, waiting_reason="CreateContainerConfigError", waiting_message="x"),
            ),
        ),
        {"Ready": (FALSE, "MissingReference"), "Degraded": (TRUE, "MissingReference")},
        ["Secret/ngc-credentials not found"],
    ),
    "nothing-available": (
        replace(
            ROLLING,
            ready_replicas=0,
            available_replicas=0,
            pods=(ObservedPod("llm-c", False, UNSCHEDULABLE_MSG),),
        ),
        {"Ready": (FALSE, "Unschedulable"), "Available": (FALSE, "NoReplicasAvailable")},
        ["0 of 2 replicas ready"],
    ),
    "progress-deadline-exceeded": (
        replace(ROLLING, progress_deadline_exceeded=True),
        {
            "Ready": (FALSE, "ProgressDeadlineExceeded"),
            "Progressing": (FALSE, "ProgressDeadlineExceeded"),
            "Degraded": (TRUE, "ProgressDeadlineExceeded"),
        },
        ["no progress within its deadline"],
    ),
    "scaled-to-zero": (
        replace(
            HEALTHY, desired_replicas=0, updated_replicas=0, ready_replicas=0, available_replicas=0, pods=()
        ),
        {
            "Ready": (TRUE, "ScaledToZero"),
            "Available": (FALSE, "ScaledToZero"),
            "Progressing": (FALSE, "RolloutComplete"),
            "Degraded": (FALSE, "AsExpected"),
        },
        ["Scaled to zero"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_server_conditions_table(case: str) -> None:
    observed, expected, fragments = CASES[case]
    decided = {c.type: c for c in server_conditions(observed, GEN)}
    assert list(decided) == ["Ready", "Available", "Progressing", "Degraded"]
    for type_, (status, reason) in expected.items():
        assert (decided[type_].status, decided[type_].reason) == (status, reason), (type_, decided[type_])
    for fragment in fragments:
        assert fragment in decided["Ready"].message, decided["Ready"].message
    # Every decided condition is writable as is: CamelCase reason, non-empty message.
    stamped = set_conditions([], decided.values(), GEN, T0)
    for condition in stamped:
        Condition.model_validate(condition)
        assert condition["message"]


def test_rollout_done_then_pod_lost_goes_back_to_not_ready() -> None:
    """Level-based: the same function judges any later observation; a lost pod makes Ready False again."""
    before = set_conditions([], server_conditions(HEALTHY, GEN), GEN, T0)
    after = set_conditions(before, server_conditions(ROLLING, GEN), GEN, T1)
    ready_before = next(c for c in before if c["type"] == "Ready")
    ready_after = next(c for c in after if c["type"] == "Ready")
    assert (ready_before["status"], ready_after["status"]) == ("True", "False")
    assert ready_after["lastTransitionTime"] == rfc3339(T1)
    degraded_after = next(c for c in after if c["type"] == "Degraded")
    assert degraded_after["lastTransitionTime"] == rfc3339(T0)  # still False: unchanged
