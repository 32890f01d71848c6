"""The one rollout engine (reconcile/traffic.py over rollout/machine.py), for both traffic backends: every
transition a routed model or a Gateway split goes through, from the same inputs (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from triton_operator.observe.rollout import VersionSample, WindowStart, step_windows
from triton_operator.reconcile.traffic import CanaryInputs, canary_pass, experiment_pass
from triton_operator.rollout.analysis import AnalysisLimits
from triton_operator.rollout.plan import RolloutPlan, Step
from triton_operator.rollout.state import Action, Phase, RolloutReason, RolloutState, settled
from triton_operator.rollout.traffic import Variant

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
STEPS = (Step(10, 30.0), Step(50, 30.0))
VERSIONS = RolloutPlan(STEPS, 10.0)
SERVERS = RolloutPlan(STEPS, 10.0, subject="server")
LIMITS = AnalysisLimits(min_requests=10, max_failure_ratio=0.05)


def inputs(
    plan: RolloutPlan,
    state: RolloutState | None,
    requested: str,
    *,
    ready: bool = True,
    retired: str | None = None,
    now: datetime = T0,
) -> CanaryInputs:
    return CanaryInputs(
        plan, LIMITS, state, requested=requested, ready=ready, waiting_for="its files load",
        applied=False, counters={}, window=None, command=None, retired=retired, now=now, monotonic=0.0,
    )  # fmt: skip


def running(stable: str, canary: str, step: int = 0) -> RolloutState:
    return RolloutState(Phase.PROGRESSING, stable, canary, step, T0)


def promoted(stable: str, canary: str) -> RolloutState:
    return RolloutState(Phase.PROMOTED, stable, canary, 1, T0, reason=RolloutReason.PROMOTED)


# Every transition outside the steps themselves, for versions and for servers alike:
# (plan, state in status, requested, ready, retired) -> (action, reason, weights, Ready said, Progressing)
V, S, IMMEDIATE = VERSIONS, SERVERS, replace(SERVERS, immediate=True)
CASES = [
    # No rollout in status yet: the requested variant serves everything.
    (V, None, "1", True, None, "Hold", "Serving", {"1": 100}, None, False),
    # A new variant that is not ready gets nothing; the state is unchanged, the model is not Ready.
    (V, settled("1", T0), "2", False, None, "Hold", "CanaryLoading", {"1": 100}, False, True),
    (S, settled("a", T0), "b", False, None, "Hold", "CanaryLoading", {"a": 100}, False, True),
    # Ready: step 1 at its weight.
    (V, settled("1", T0), "2", True, None, "Start", "CanaryStarted", {"1": 90, "2": 10}, False, True),
    (S, settled("a", T0), "b", True, None, "Start", "CanaryStarted", {"a": 90, "b": 10}, False, True),
    # Loading applies to a new variant only: the running canary keeps its step while it reloads.
    (V, running("1", "2"), "2", False, None, "Hold", "WaitingForMetrics", {"1": 90, "2": 10}, False, True),
    # Strategy Immediate: 100% at once once ready, the old variant retired next.
    (IMMEDIATE, settled("a", T0), "b", True, None, "Promote", "RolledOutImmediately", {"a": 0, "b": 100},
     None, False),
    # A promotion holds at 100% until the old variant is retired, then settles on the new one.
    (V, promoted("1", "2"), "2", True, None, "Hold", "Promoted", {"1": 0, "2": 100}, None, False),
    (V, promoted("1", "2"), "2", True, "version 1 unloaded", "Settle", "Serving", {"2": 100}, None, False),
    (S, promoted("a", "b"), "b", True, "the copy on server a is removed", "Settle", "Serving", {"b": 100},
     None, False),
    # Retired says nothing to a settled rollout.
    (V, settled("2", T0), "2", True, "version 1 unloaded", "Hold", "Serving", {"2": 100}, None, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("plan", "state", "requested", "ready", "retired", "action", "reason", "weights", "ready_said", "moving"),
    CASES,
)
def test_every_transition_is_the_machines(
    plan: RolloutPlan,
    state: RolloutState | None,
    requested: str,
    ready: bool,
    retired: str | None,
    action: str,
    reason: str,
    weights: dict[str, int],
    ready_said: bool | None,
    moving: bool,
) -> None:
    decision, _, outcome = canary_pass(inputs(plan, state, requested, ready=ready, retired=retired))
    assert (str(decision.action), str(decision.reason), decision.weights) == (action, reason, weights)
    assert (outcome.ready[0] if outcome.ready else None, outcome.progressing[0]) == (ready_said, moving)
    assert outcome.rollout is not None and outcome.rollout["message"] == decision.message
    # Messages speak of what the plan moves traffic between; nothing renames them afterwards.
    assert ("version" if plan.subject == "server" else "server") not in decision.message, decision.message


def test_a_loading_canary_shows_in_traffic_with_nothing_yet() -> None:
    decision, _, outcome = canary_pass(inputs(VERSIONS, settled("1", T0), "2", ready=False))
    assert decision.state == settled("1", T0)  # its first step starts once it is ready
    assert decision.message == (
        "version 2 gets traffic once it is ready on every replica (its files load); "
        "until then: version 1 100%"
    )
    assert [(e["version"], e["role"], e["desiredWeight"]) for e in outcome.traffic] == [
        ("1", "stable", 100),
        ("2", "canary", 0),
    ]


def test_settling_keeps_the_verdict_and_the_command_and_starts_afresh() -> None:
    state = replace(promoted("1", "2"), last_verdict_message="2.0% failures", last_command_token="promote 9")
    later = T0 + timedelta(minutes=5)
    decision, _, outcome = canary_pass(inputs(VERSIONS, state, "2", retired="version 1 unloaded", now=later))
    done = decision.state
    assert (done.phase, done.stable_version, done.canary_version, done.step_index) == (
        Phase.PROMOTED,
        "2",
        "2",
        0,
    )
    assert done.step_started_at == later
    assert (done.last_verdict_message, done.last_command_token) == ("2.0% failures", "promote 9")
    assert decision.message == "version 2 promoted and serves 100%; version 1 unloaded"
    assert decision.retire is None and outcome.rollout is not None
    assert "nextDecisionAt" not in outcome.rollout and outcome.rollout["canaryWeight"] == 100
    assert [e["version"] for e in outcome.traffic] == ["2"]


def test_a_promotion_names_the_variant_to_retire() -> None:
    decision, _, _ = canary_pass(inputs(VERSIONS, promoted("1", "2"), "2"))
    assert decision.retire == "1"
    assert canary_pass(inputs(VERSIONS, running("1", "2"), "2"))[0].retire is None


def sample(success: float, failure: float = 0.0) -> VersionSample:
    return VersionSample(success, failure, success + failure, 0.0, None, None)


def test_a_window_starts_once_the_weights_are_in_place_and_a_new_key_starts_afresh() -> None:
    before = {("p0", "1"): sample(100), ("p0", "2"): sample(5)}
    after = {("p0", "1"): sample(190), ("p0", "2"): sample(15, 1)}
    assert step_windows(None, "k", False, before, ["1", "2"], 0.0) == (None, {})
    start, windows = step_windows(None, "k", True, before, ["1", "2"], 1.0)
    assert start == WindowStart("k", before, 1.0) and windows == {}
    kept, windows = step_windows(start, "k", True, after, ["1", "2"], 11.0)
    assert kept is start
    assert (windows["1"].requests, windows["2"].requests, windows["2"].failures) == (90, 11, 1)
    assert windows["2"].seconds == 10.0
    fresh, windows = step_windows(start, "k2", True, after, ["1", "2"], 12.0)
    assert fresh == WindowStart("k2", after, 12.0) and windows == {}


def test_a_step_is_judged_on_its_own_window() -> None:
    counters = {("p0", "1"): sample(100), ("p0", "2"): sample(100)}
    seen = replace(inputs(VERSIONS, running("1", "2"), "2"), applied=True, counters=counters, monotonic=5.0)
    decision, start, _ = canary_pass(seen)
    assert start is not None and decision.reason == RolloutReason.WAITING_FOR_METRICS
    failing = {("p0", "1"): sample(200), ("p0", "2"): sample(100, 20)}
    later = replace(seen, counters=failing, window=start, monotonic=15.0, now=T0 + timedelta(seconds=15))
    decision, _, outcome = canary_pass(later)
    assert decision.action is Action.ROLLBACK and decision.weights == {"1": 100, "2": 0}
    assert outcome.stalled and outcome.degraded is not None and outcome.degraded[1] == "RolledBack"


def test_an_experiment_holds_its_weights_and_measures_each_variant() -> None:
    variants = [Variant("a", "a", 90), Variant("b", "b", 10)]
    counters = {("p0", "a"): sample(0), ("p0", "b"): sample(0)}
    start, outcome = experiment_pass(variants, None, True, counters, 0.0, describe="server")
    assert start is not None and outcome.progressing == (
        False,
        "ExperimentRunning",
        "experiment holds a 90% / b 10% (never promotes): a (server a, 90%): no metrics yet; "
        "b (server b, 10%): no metrics yet",
    )
    counters = {("p0", "a"): sample(90), ("p0", "b"): sample(10)}
    _, outcome = experiment_pass(variants, start, True, counters, 10.0, describe="server")
    shares = {e["version"]: (e["desiredWeight"], e["requests"], e["observedShare"]) for e in outcome.traffic}
    assert shares == {"a": (90, 90, 90.0), "b": (10, 10, 10.0)}
