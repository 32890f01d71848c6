"""kstatus (Flux, kpt, cli-utils) reads both kinds right in every state: Reconciling and Stalled, as a
table against kstatus's rules (tests/integration/test_kstatus.py runs kstatus itself on the same objects).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from triton_operator.api.common import Condition, ConditionStatus
from triton_operator.conditions import (
    UNSCHEDULABLE_STALL_S,
    DecidedCondition,
    ObservedPod,
    ObservedServerState,
    server_stuck,
    with_kstatus,
)
from triton_operator.observe.pools import Pool, split_stuck
from triton_operator.observe.rollout import TrafficOutcome
from triton_operator.observe.server import observe_pod
from triton_operator.reconcile.traffic import canary_outcome
from triton_operator.rollout.analysis import Assessment, Verdict
from triton_operator.rollout.machine import decide
from triton_operator.rollout.spec import plan_of
from triton_operator.rollout.state import Phase, RolloutState

from tests.support.kstatus_states import (
    CURRENT,
    FAILED,
    IN_PROGRESS,
    KState,
    all_states,
    canary_spec,
    kstatus_rules,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
STATES = {s.name: s for s in all_states(NOW)}
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


def by_type(state: KState) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in state.obj["status"]["conditions"]}


def test_every_state_the_issue_names_is_in_the_table() -> None:
    named = {
        "TritonModel/canary-progressing": IN_PROGRESS,
        "TritonModel/canary-promoted": CURRENT,
        "TritonModel/canary-rolled-back": FAILED,
        "TritonModel/canary-aborted": FAILED,
        "TritonModel/staging-failed-source-missing": FAILED,
        "TritonModel/server-missing": FAILED,
        "TritonServer/unschedulable": FAILED,
        "TritonServer/rolling": IN_PROGRESS,
        "TritonModel/served": CURRENT,
    }
    assert {name: STATES[name].expected for name in named} == named


@pytest.mark.parametrize("name", sorted(STATES))
def test_kstatus_reads_each_state_right(name: str) -> None:
    state = STATES[name]
    conditions = by_type(state)
    reconciling, stalled = conditions["Reconciling"], conditions["Stalled"]
    assert (reconciling["status"], stalled["status"]) == (state.reconciling, state.stalled)
    assert kstatus_rules(state.obj)[0] == state.expected
    # Never both True: kstatus takes whichever comes first in the list.
    assert "False" in (reconciling["status"], stalled["status"])
    for condition in state.obj["status"]["conditions"]:
        Condition.model_validate(condition)  # CamelCase reason, the shape the CRD accepts
        assert condition["message"]
    degraded, ready = conditions.get("Degraded"), conditions["Ready"]
    if stalled["status"] == "True":
        # Stalled says what Degraded says (Ready's words when nothing is Degraded): the reason to act on.
        cause = degraded if degraded and degraded["status"] == "True" else ready
        assert (stalled["reason"], stalled["message"]) == (cause["reason"], cause["message"])
        assert ready["status"] == "False"
    if reconciling["status"] == "True" and ready["status"] == "False":
        assert (reconciling["reason"], reconciling["message"]) == (ready["reason"], ready["message"])


def test_failed_states_tell_the_reason_a_flux_user_acts_on() -> None:
    assert "failure ratio 0.500" in kstatus_rules(STATES["TritonModel/canary-rolled-back"].obj)[1]
    assert "no manifest.json" in kstatus_rules(STATES["TritonModel/staging-failed-source-missing"].obj)[1]
    assert "Insufficient nvidia.com/gpu" in kstatus_rules(STATES["TritonServer/unschedulable"].obj)[1]
    assert "not found" in kstatus_rules(STATES["TritonModel/server-missing"].obj)[1]


def test_with_kstatus_only_adds_the_two_and_is_idempotent() -> None:
    decided = [
        DecidedCondition("Ready", FALSE, "RolledBack", "rolled back"),
        DecidedCondition("Degraded", TRUE, "RolledBack", "rolled back"),
        DecidedCondition("Progressing", FALSE, "RolledBack", "rolled back"),
    ]
    once = with_kstatus(decided, stuck=True)
    assert once[:3] == decided
    assert [(c.type, str(c.status)) for c in once[3:]] == [("Reconciling", "False"), ("Stalled", "True")]
    assert with_kstatus(once, stuck=True) == once
    # The verdict follows `stuck`, recomputed, never stale: an overlay may call it again.
    again = with_kstatus(once, stuck=False)
    assert [(c.type, str(c.status)) for c in again[3:]] == [("Reconciling", "True"), ("Stalled", "False")]


def test_a_ready_object_is_never_stalled_and_reconciles_only_while_progressing() -> None:
    ready = DecidedCondition("Ready", TRUE, "AllReplicasReady", "All 2 replicas ready.")
    missing = DecidedCondition("Degraded", TRUE, "MissingReference", "Secret/x not found")
    out = {c.type: c for c in with_kstatus([ready, missing], stuck=True)}
    assert (str(out["Reconciling"].status), str(out["Stalled"].status)) == ("False", "False")
    assert out["Reconciling"].reason == "AllReplicasReady"
    rolling = DecidedCondition("Progressing", TRUE, "RollingOut", "rolling")
    out = {c.type: c for c in with_kstatus([ready, rolling], stuck=False)}
    assert (str(out["Reconciling"].status), out["Reconciling"].reason) == ("True", "RollingOut")


def test_unschedulable_stalls_only_after_its_grace() -> None:
    def server(seconds: float) -> ObservedServerState:
        pod = ObservedPod("p", False, "0/3 nodes are available", unschedulable_for_s=seconds)
        return ObservedServerState(
            applied_generation=1, deployment_found=True, desired_replicas=1, pods=(pod,)
        )

    assert not server_stuck(server(UNSCHEDULABLE_STALL_S - 1))
    assert server_stuck(server(UNSCHEDULABLE_STALL_S))
    # Pods held for a claim that is still being provisioned are no problem at all, however long.
    waiting = ObservedPod("p", False, "unbound immediate PersistentVolumeClaims", waits_for_claim=True,
                          unschedulable_for_s=600)  # fmt: skip
    binding = ObservedServerState(
        applied_generation=1, deployment_found=True, pods=(waiting,), claim_binding=True
    )
    assert not server_stuck(binding)


def test_observe_pod_counts_unschedulable_time_from_the_schedulers_condition() -> None:
    since = NOW - timedelta(seconds=95)
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-12-01T09:00:00Z"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no gpu",
                 "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")},
            ],
        },
    }  # fmt: skip
    assert observe_pod(pod, None, NOW).unschedulable_for_s == 95.0
    del pod["status"]["conditions"][0]["lastTransitionTime"]  # then from the pod's creation
    assert observe_pod(pod, None, NOW).unschedulable_for_s == 3600.0
    scheduled = {
        "metadata": {"name": "q"},
        "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]},
    }
    assert observe_pod(scheduled, None, NOW).unschedulable_for_s == 0.0


def test_the_rollback_decision_itself_is_stalled() -> None:
    """The pass that rolls back (not only the later ones reading the state back) says Stalled."""
    spec = canary_spec(2)
    plan, _ = plan_of(spec)
    running = RolloutState(Phase.PROGRESSING, "1", "2", 0, NOW - timedelta(seconds=30))
    failed = Assessment(Verdict.FAILED, "failure ratio 0.500 > 0.050", ())
    decision = decide(plan, running, failed, NOW, canary_version="2")
    assert decision.state.phase is Phase.ROLLED_BACK
    outcome = canary_outcome(plan, decision, {}, "2")
    assert outcome.stalled and outcome.degraded is not None
    advancing = decide(plan, running, None, NOW, canary_version="2")
    assert not canary_outcome(plan, advancing, {}, "2").stalled


def test_a_split_model_is_stuck_on_a_missing_server_a_stalled_copy_or_an_ended_rollout() -> None:
    serving = Pool("a", True, 2, True, "")
    outcome = TrafficOutcome(None, [], None, (False, "RolloutComplete", "done"))
    assert not split_stuck({"a": serving}, {"a": 100}, outcome)
    assert split_stuck({"a": serving, "b": Pool("b", False, 0, False, "no b")}, {"a": 100}, outcome)
    failed = Pool("b", True, 1, False, "its copy failed", copy_failed=True)
    assert not split_stuck({"a": serving, "b": failed}, {"a": 50, "b": 50}, outcome)  # its retries may help
    stalled = Pool("b", True, 1, False, "its copy failed", copy_failed=True, copy_stalled=True)
    assert split_stuck({"a": serving, "b": stalled}, {"a": 50, "b": 50}, outcome)
    assert not split_stuck({"a": serving, "b": stalled}, {"a": 100, "b": 0}, outcome)  # not wanted
    ended = TrafficOutcome(None, [], (False, "RolledBack", "x"), (False, "RolledBack", "x"),
                         (True, "RolledBack", "x"), stalled=True)  # fmt: skip
    assert split_stuck({"a": serving}, {"a": 100}, ended)
