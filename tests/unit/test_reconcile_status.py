"""When status is rewritten and which transitions become Events (pure parts of reconcile/status.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest
from triton_operator.api.common import ConditionStatus
from triton_operator.conditions import DecidedCondition, set_conditions, with_kstatus
from triton_operator.kube.rest import Kube
from triton_operator.observe.story import is_problem, transitions
from triton_operator.reconcile.status import stamp_metrics, with_removals, write_status
from triton_operator.reconcile.traffic import canary_outcome
from triton_operator.rollout.analysis import Assessment, Verdict
from triton_operator.rollout.machine import decide
from triton_operator.rollout.spec import plan_of
from triton_operator.rollout.state import Phase, RolloutState

from tests.support.kstatus_states import canary_spec

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=10)


def test_refreshed_at_moves_only_when_the_figures_change() -> None:
    first: dict[str, Any] = {"metrics": {"total": {"inferenceRate": 2.0}}}
    stamp_metrics(first, {}, T0)
    assert first["metrics"]["refreshedAt"] == "2026-01-01T12:00:00Z"

    same: dict[str, Any] = {"metrics": {"total": {"inferenceRate": 2.0}}}
    stamp_metrics(same, first, T1)
    assert same == first  # nothing new to say: an identical status, so no write

    changed: dict[str, Any] = {"metrics": {"total": {"inferenceRate": 3.0}}}
    stamp_metrics(changed, first, T1)
    assert changed["metrics"]["refreshedAt"] == "2026-01-01T12:00:10Z"


def test_transitions_are_status_or_reason_changes_and_new_conditions() -> None:
    old = [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "All 2 ready."}]
    new = [
        {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "All 3 ready."},
        {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": ""},
    ]
    assert [c["type"] for c in transitions(old, new)] == ["Degraded"]  # a new message alone is no event
    flipped = [{"type": "Ready", "status": "False", "reason": "ReplicasNotReady", "message": "1 of 2"}]
    assert transitions(old, flipped) == flipped


@pytest.mark.parametrize(
    ("cond", "others", "problem"),
    [
        ({"type": "Ready", "status": "False", "reason": "StepAdvanced"}, [], True),
        # Not Ready for the reason a rollout step is Progressing: progress, a Normal Event.
        (
            {"type": "Ready", "status": "False", "reason": "StepAdvanced"},
            [{"type": "Progressing", "status": "True", "reason": "StepAdvanced"}],
            False,
        ),
        # ... but a replica down while pods roll is a problem of its own.
        (
            {"type": "Ready", "status": "False", "reason": "ReplicasNotReady"},
            [{"type": "Progressing", "status": "True", "reason": "RollingOut"}],
            True,
        ),
        (
            {"type": "Ready", "status": "False", "reason": "StepAdvanced"},
            [
                {"type": "Progressing", "status": "True", "reason": "StepAdvanced"},
                {"type": "Degraded", "status": "True", "reason": "LoadFailed"},
            ],
            True,
        ),
        ({"type": "Degraded", "status": "True"}, [{"type": "Progressing", "status": "True"}], True),
        # A fresh server rolling out serves nothing yet: progress (it warned on every deploy) ...
        (
            {"type": "Available", "status": "False", "reason": "NoReplicasAvailable"},
            [{"type": "Progressing", "status": "True", "reason": "RollingOut"}],
            False,
        ),
        # ... but every replica lost once rolled out is an outage.
        (
            {"type": "Available", "status": "False", "reason": "NoReplicasAvailable"},
            [{"type": "Progressing", "status": "False", "reason": "RolloutComplete"}],
            True,
        ),
        # A model waiting for its server's replicas: time fixes it (the server warns if it is stuck).
        ({"type": "Ready", "status": "False", "reason": "WaitingForReplicas"}, [], False),
        ({"type": "Routed", "status": "False"}, [], True),
        # Files being staged or a model loading: time fixes it.
        ({"type": "Ready", "status": "False", "reason": "Staging"}, [], False),
        ({"type": "Loaded", "status": "False", "reason": "Loading"}, [], False),
        ({"type": "Staged", "status": "False", "reason": "StagingFailed"}, [], True),
        ({"type": "Ready", "status": "True"}, [], False),
        ({"type": "Progressing", "status": "True"}, [], False),
    ],
)
def test_warning_events_are_for_problems_not_progress(
    cond: dict[str, str], others: list[dict[str, str]], problem: bool
) -> None:
    assert is_problem(cond, [cond, *others]) is problem


class RecordingKube:
    """Kube.patch_status applying a JSON merge patch to the object, as the apiserver does; the Events
    posted (kube.events) kept in `events`."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.patches: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        assert kind == "Event"
        self.events.append(obj)
        return obj

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(status)
        self.body = {**self.body, "status": _merge(self.body.get("status") or {}, status)}
        return self.body


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def test_a_model_gone_idle_after_traffic_is_written_once_not_every_period() -> None:
    """bench/real_models.py: once a model had served a request and went idle, its status was patched
    every period forever (298-309 writes a minute for 51 idle objects), still showing the busy window's
    p50: the idle figures leave the latencies out, and a merge patch keeps a nested key it is not told
    to remove, so each pass saw a difference again."""
    busy = {"successCount": 1, "p50LatencyMs": 30.2, "refreshedAt": "2026-01-01T12:00:00Z"}
    body = {"metadata": {"namespace": "ns", "name": "m"}, "status": {"loaded": "2/2", "metrics": busy}}
    kube = RecordingKube(body)
    for when in (T0, T1, T1 + dt.timedelta(seconds=10)):
        idle: dict[str, Any] = {"loaded": "2/2", "metrics": {"successCount": 1}}
        stamp_metrics(idle, kube.body["status"], when)
        write_status(cast(Kube, kube), "TritonModel", kube.body, idle, ["loaded", "metrics"])
    assert len(kube.patches) == 1
    assert kube.patches[0]["metrics"]["p50LatencyMs"] is None
    assert kube.body["status"]["metrics"] == {"successCount": 1, "refreshedAt": "2026-01-01T12:00:00Z"}


def test_with_removals_nulls_only_nested_keys_that_went_away() -> None:
    old = {"metrics": {"a": 1, "b": {"c": 2, "d": 3}}, "pods": [1, 2]}
    new = {"metrics": {"a": 1, "b": {"c": 2}}, "pods": [1]}
    assert with_removals(old, new) == {"metrics": {"a": 1, "b": {"c": 2, "d": None}}, "pods": [1]}


def test_next_decision_at_goes_once_the_rollout_ended() -> None:
    """status.rollout.nextDecisionAt ("unset once the rollout ended") stayed set after a rollback: the
    rolled-back outcome leaves it out, and a merge patch kept the old one; every pass then saw a
    difference and wrote again."""
    plan, _ = plan_of(canary_spec(2))
    running = RolloutState(Phase.PROGRESSING, "1", "2", 0, T0)
    holding = canary_outcome(plan, decide(plan, running, None, T1, canary_version="2"), {}, "2")
    assert holding.rollout is not None and "nextDecisionAt" in holding.rollout
    body = {"metadata": {"namespace": "ns", "name": "m"}, "status": {}}
    kube = RecordingKube(body)
    write_status(cast(Kube, kube), "TritonModel", kube.body, {"rollout": holding.rollout}, ["rollout"])
    assert "nextDecisionAt" in kube.body["status"]["rollout"]

    failed = Assessment(Verdict.FAILED, "failure ratio 0.500 > 0.050", ())
    rolled_back = canary_outcome(plan, decide(plan, running, failed, T1, canary_version="2"), {}, "2")
    assert rolled_back.rollout is not None and rolled_back.rollout["phase"] == "RolledBack"
    for _ in range(3):
        write_status(
            cast(Kube, kube), "TritonModel", kube.body, {"rollout": rolled_back.rollout}, ["rollout"]
        )
    assert "nextDecisionAt" not in kube.body["status"]["rollout"]
    assert kube.body["status"]["rollout"]["phase"] == "RolledBack"
    assert len(kube.patches) == 2  # the rollback written once, then nothing new to say
    assert kube.patches[1]["rollout"]["nextDecisionAt"] is None


def test_reconciling_and_stalled_flips_are_no_events_of_their_own() -> None:
    """Reconciling and Stalled only restate Ready/Degraded/Progressing for kstatus, and Ready and Degraded
    turning False/True for one cause are one problem: a rollback is one Warning Event with its reason
    (it was one Event per condition flip: "Degraded is True: ..." and "Ready is False: ..." for the same
    rollback, issue 25)."""
    serving = with_kstatus(
        [
            DecidedCondition("Ready", ConditionStatus.TRUE, "Loaded", "ready on 2/2"),
            DecidedCondition("Degraded", ConditionStatus.FALSE, "AsExpected", "fine"),
        ],
        stuck=False,
    )
    rolled_back = with_kstatus(
        [
            DecidedCondition("Ready", ConditionStatus.FALSE, "RolledBack", "rolled back to 1"),
            DecidedCondition("Degraded", ConditionStatus.TRUE, "RolledBack", "rolled back to 1"),
        ],
        stuck=True,
    )
    before = set_conditions([], serving, 1, T0)
    body = {"metadata": {"namespace": "ns", "name": "m"}, "status": {"conditions": before}}
    kube = RecordingKube(body)
    after = set_conditions(before, rolled_back, 1, T1)
    assert {c["type"]: c["status"] for c in after}["Stalled"] == "True"
    write_status(cast(Kube, kube), "TritonModel", kube.body, {"conditions": after}, ["conditions"])
    assert [(e["type"], e["reason"], e["message"]) for e in kube.events] == [
        ("Warning", "RolledBack", "Rolled back to 1.")
    ]
