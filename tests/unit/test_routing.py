"""Routed models: per-version windows from Triton's counters, commands, weights and conditions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from triton_operator.api.common import ConditionStatus
from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.conditions import DecidedCondition
from triton_operator.observe.metrics import Scrape
from triton_operator.observe.model import routed_conditions
from triton_operator.observe.rollout import (
    TrafficOutcome,
    VersionSample,
    target_counters,
    traffic_entries,
    version_window,
)
from triton_operator.reconcile.routing import router_everywhere
from triton_operator.reconcile.state import RoutingMemory
from triton_operator.reconcile.traffic import CanaryInputs, canary_pass, read_state
from triton_operator.rollout.spec import command_of, plan_of
from triton_operator.rollout.state import Phase, RolloutState, settled
from triton_operator.triton.metrics import MetricsSnapshot, ModelCounters, RoutedCounts

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
TARGET = "scorer~versions"


def counters(version: str, success: int, failure: int = 0, **kw: Any) -> ModelCounters:
    return ModelCounters(TARGET, version, success_count=success, failure_count=failure, **kw)


def sample(success: int, failure: int = 0, inferences: int = 0, p99_us: float | None = None) -> VersionSample:
    return VersionSample(success, failure, inferences, 0.0, None, p99_us)


def test_a_window_sums_pods_and_counts_a_reset_counter_from_zero() -> None:
    baseline = {("a", "2"): sample(100, 1, 100), ("b", "2"): sample(50)}
    current = {
        ("a", "2"): sample(160, 4, 163, p99_us=2500.0),
        ("b", "2"): sample(10, 0, 10, p99_us=4000.0),  # b restarted
        ("a", "1"): sample(999),
    }
    window = version_window(baseline, current, "2", seconds=10)
    assert (window.requests, window.failures, window.inferences) == (60 + 3 + 10, 3, 63 + 10)
    assert window.p99_ms == 4.0  # the worst pod's


def test_traffic_entries_give_each_version_its_observed_share() -> None:
    windows = {
        "1": version_window({}, {("a", "1"): sample(900, 0, 900)}, "1", 10),
        "2": version_window({}, {("a", "2"): sample(99, 1, 100)}, "2", 10),
    }
    entries = traffic_entries(windows, {"1": "stable", "2": "canary"}, {"1": 90, "2": 10})
    assert entries[0] == {
        "version": "1", "role": "stable", "desiredWeight": 90, "requests": 900, "observedShare": 90.0,
        "requestsPerSecond": 90.0, "failureRatio": 0.0,
    }  # fmt: skip
    assert entries[1]["observedShare"] == 10.0 and entries[1]["failureRatio"] == 0.01


def test_requests_come_from_the_routers_counts_inferences_from_tritons() -> None:
    """A version answering with error responses is no failure to Triton: the router's counts say so."""
    snapshot = MetricsSnapshot(
        models={(TARGET, "1"): counters("1", 5, inference_count=9), ("scorer", "1"): counters("1", 7)},
        routed={("scorer", TARGET, "1"): RoutedCounts(success=8, failure=2)},
    )
    samples = target_counters({"pod-a": Scrape(snapshot, 1.0)}, TARGET, "scorer")
    assert samples == {("pod-a", "1"): VersionSample(8, 2, 9, 0.0, None, None)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("promote", ("promote", "promote")),
        ("Abort 1764583200", ("abort", "Abort 1764583200")),
        ("retry now", ("retry", "retry now")),
        ("rollback", None),
        ("", None),
    ],
)
def test_commands_come_from_the_annotation(value: str, expected: tuple[str, str] | None) -> None:
    command = command_of({"tritonoperator.dev/rollout": value})
    assert (None if command is None else (str(command.action), command.token)) == expected


def canary_spec(version: int = 2) -> TritonModelSpec:
    return TritonModelSpec.model_validate(
        {
            "serverRef": {"name": "triton"},
            "version": version,
            "source": {"s3": {"bucket": "models", "prefix": f"scorer/{version}"}},
            "rollout": {"strategy": "Canary", "steps": [{"weight": 10}, {"weight": 100, "pauseSeconds": 0}]},
        }
    )


def canary_inputs(
    spec: TritonModelSpec, status: dict[str, Any], annotations: dict[str, str], *, ready: bool
) -> CanaryInputs:
    plan, limits = plan_of(spec)
    return CanaryInputs(
        plan, limits, read_state(status), requested=str(spec.version), ready=ready,
        waiting_for="its files are staging or loading", applied=False, counters={}, window=None,
        command=command_of(annotations), retired=None, now=NOW, monotonic=0.0,
    )  # fmt: skip


def test_a_new_version_gets_no_traffic_until_ready_everywhere_then_starts_at_step_one() -> None:
    status = {"rollout": settled("1", NOW).to_status()}
    decision, _, outcome = canary_pass(canary_inputs(canary_spec(), status, {}, ready=False))
    assert decision.weights == {"1": 100} and decision.state == settled("1", NOW)
    assert outcome.ready is not None and outcome.ready[1] == "CanaryLoading"
    assert "version 2 gets traffic once it is ready on every replica" in outcome.ready[2]
    decision, _, outcome = canary_pass(canary_inputs(canary_spec(), status, {}, ready=True))
    state = decision.state
    assert (state.phase, state.stable_version, state.canary_version) == (Phase.PROGRESSING, "1", "2")
    assert decision.weights == {"1": 90, "2": 10}
    assert outcome.rollout is not None and outcome.rollout["canaryWeight"] == 10
    assert outcome.progressing[0] is True


def test_an_abort_command_sends_everything_back_to_stable() -> None:
    plan, _ = plan_of(canary_spec())
    running = RolloutState(Phase.PROGRESSING, "1", "2", 0, NOW)
    status = {"rollout": running.to_status()}
    annotations = {"tritonoperator.dev/rollout": "abort 1"}
    decision, _, outcome = canary_pass(canary_inputs(canary_spec(), status, annotations, ready=True))
    state = decision.state
    assert state.phase is Phase.ABORTED and decision.weights == {"1": 100, "2": 0}
    assert outcome.degraded is not None and outcome.degraded[0] is True
    assert state.last_command_token == "abort 1"
    assert len(plan.steps) == 2


def test_routed_conditions_hold_ready_during_a_rollout_and_add_progressing() -> None:
    own = [
        DecidedCondition("Ready", ConditionStatus.TRUE, "Loaded", "ready on 2/2"),
        DecidedCondition("Degraded", ConditionStatus.FALSE, "AsExpected", "fine"),
    ]
    outcome = TrafficOutcome(
        rollout={}, traffic=[], ready=(False, "StepAdvanced", "step 2/3"),
        progressing=(True, "StepAdvanced", "x"), degraded=None,
    )  # fmt: skip
    out = {c.type: (str(c.status), c.reason) for c in routed_conditions(own, outcome)}
    assert out == {"Ready": ("False", "StepAdvanced"), "Degraded": ("False", "AsExpected"),
                   "Progressing": ("True", "StepAdvanced")}  # fmt: skip


def test_a_gateway_model_with_the_default_strategy_has_a_plan() -> None:
    """Regression (hostile-input run): a TritonModel with spec.gateway and no rollout (Immediate, no
    steps) made every pass fail on `plan.steps: at least one step is required` and never got a status.
    Immediate is one step, straight to 100%."""
    spec = TritonModelSpec.model_validate(
        {
            "serverRef": {"name": "pool-a"},
            "version": 1,
            "source": {"s3": {"bucket": "models", "prefix": "m/1"}},
            "gateway": {"parentRefs": [{"name": "sandbox"}]},
        }
    )
    plan, _ = plan_of(spec)
    assert [(s.weight, s.pause_s) for s in plan.steps] == [(100, 0.0)]


def test_a_model_is_ready_once_a_router_is_on_every_replica_whatever_its_weights() -> None:
    """A weight change reloads the router in place (it keeps serving): the model stays Ready. Only a
    replica without any router of the model (a new pod, its versions still loading) holds Ready back."""
    settled_outcome = TrafficOutcome({}, [], None, (False, "RolloutComplete", "serves 100%"))
    waiting = RoutingMemory(serving={"a"}, on_every_pod=False)
    held = router_everywhere(settled_outcome, waiting, "scorer")
    assert held.ready is not None and held.ready[:2] == (False, "RouterLoading")
    reloading = RoutingMemory(serving={"a", "b"}, on_every_pod=True, applied_at=None)
    assert router_everywhere(settled_outcome, reloading, "scorer") == settled_outcome
