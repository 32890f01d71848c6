"""The one rollout engine's pass over a model's traffic, whatever carries it: the in-server router
(variants are versions) or a Gateway's routes (variants are servers).

Each backend observes the same things (the rollout in status, whether a new variant is ready on every
replica, whether the current weights are in place, the variants' counters, whether a promotion's old
variant is retired) and calls `canary_pass` or `experiment_pass`; what comes back (a `Decision` and a
`TrafficOutcome`) is everything the backend acts on (the weights to apply, the variant to retire) and
writes (status.rollout, status.traffic, the conditions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.conditions import Reason, rfc3339
from triton_operator.observe.rollout import (
    Counters,
    TrafficOutcome,
    VersionWindow,
    WindowStart,
    step_windows,
    traffic_entries,
)
from triton_operator.reconcile.state import RoutingMemory
from triton_operator.reconcile.status import now
from triton_operator.rollout.analysis import AnalysisLimits
from triton_operator.rollout.machine import assess_step, decide
from triton_operator.rollout.plan import RolloutPlan
from triton_operator.rollout.spec import command_of, plan_of
from triton_operator.rollout.state import Command, Decision, Phase, RolloutReason, RolloutState, settled
from triton_operator.rollout.traffic import Variant, hold_experiment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CanaryInputs:
    """What a backend observed for one canary pass."""

    plan: RolloutPlan
    limits: AnalysisLimits
    # The rollout status keeps (None: none yet; the requested variant then serves everything).
    state: RolloutState | None
    # The variant the spec asks for, and whether it is ready on every replica (if not, why).
    requested: str
    ready: bool
    waiting_for: str
    # The current weights are in place everywhere (the router on every replica, the gateway's routes).
    applied: bool
    counters: Counters
    window: WindowStart | None
    command: Command | None
    # What was done to retire a promotion's old variant, once it is gone (None: not yet).
    retired: str | None
    now: datetime
    monotonic: float


def read_state(status: Mapping[str, Any], subject: str = "version") -> RolloutState | None:
    """The rollout status keeps; across servers (`subject` "server") its variants are stableServer and
    canaryServer, where the machine keeps versions. None when there is none or it cannot be read."""
    rollout = status.get("rollout")
    if subject == "server":
        if not rollout or "stableServer" not in rollout or "canaryServer" not in rollout:
            return None
        rollout = {
            **rollout,
            "stableVersion": rollout["stableServer"],
            "canaryVersion": rollout["canaryServer"],
        }
    try:
        return RolloutState.from_status(rollout) if rollout else None
    except ValueError as exc:
        log.warning("ignoring an unreadable status.rollout: %s", exc)
        return None


def spec_canary_pass(
    spec: TritonModelSpec,
    annotations: Mapping[str, str] | None,
    routing: RoutingMemory,
    counters: Counters,
    state: RolloutState | None,
    *,
    subject: str,
    requested: str,
    ready: bool,
    waiting_for: str,
    retired: str | None,
) -> tuple[Decision, TrafficOutcome]:
    """What both backends call: `canary_pass` for spec.rollout and the annotation's command, now, on
    what the backend observed; the step's window is kept in `routing` for the next pass."""
    plan, limits = plan_of(spec, subject=subject)
    decision, routing.window, outcome = canary_pass(
        CanaryInputs(
            plan,
            limits,
            state,
            requested=requested,
            ready=ready,
            waiting_for=waiting_for,
            applied=routing.applied_at is not None,
            counters=counters,
            window=routing.window,
            command=command_of(annotations),
            retired=retired,
            now=now(),
            monotonic=time.monotonic(),
        )
    )
    return decision, outcome


def canary_pass(seen: CanaryInputs) -> tuple[Decision, WindowStart | None, TrafficOutcome]:
    """The machine's decision, the window it judged (kept for the next pass), and what status says."""
    plan = seen.plan
    state = seen.state or settled(seen.requested, seen.now, plan.subject)
    windows: dict[str, VersionWindow] = {}
    start = None
    if state.phase is Phase.PROGRESSING and state.canary_version == seen.requested:
        key: Hashable = (state.canary_version, state.step_index, state.step_started_at.isoformat())
        variants = [state.stable_version, state.canary_version]
        start, windows = step_windows(seen.window, key, seen.applied, seen.counters, variants, seen.monotonic)
    analyzed = {variant: window.analysis() for variant, window in windows.items()}
    decision = decide(
        plan,
        state,
        assess_step(plan, state, analyzed, seen.limits),
        seen.now,
        seen.command,
        canary_version=seen.requested,
        canary_ready=seen.ready,
        waiting_for=seen.waiting_for,
        retired=seen.retired,
    )
    return decision, start, canary_outcome(plan, decision, windows, seen.requested)


def canary_outcome(
    plan: RolloutPlan, decision: Decision, windows: Mapping[str, VersionWindow], requested: str
) -> TrafficOutcome:
    """status.rollout, status.traffic and the conditions of a canary's decision (pure)."""
    state = decision.state
    weights = decision.weights
    roles = {state.stable_version: "stable"}
    if state.canary_version != state.stable_version:
        roles[state.canary_version] = "canary"
    if decision.reason == RolloutReason.CANARY_LOADING:
        roles.setdefault(requested, "canary")
    entries = traffic_entries(windows, roles, weights)
    rollout = state.to_status() | {
        "steps": len(plan.steps),
        "canaryWeight": decision.canary_weight,
        "message": decision.message,
    }
    if decision.next_decision_at is not None:
        rollout["nextDecisionAt"] = rfc3339(decision.next_decision_at)
    served = state.canary_version if state.phase is Phase.PROMOTED else state.stable_version
    reason, message = str(decision.reason), decision.message
    if decision.in_progress:
        return TrafficOutcome(
            rollout, entries, (False, reason, message), (True, reason, message), None, served
        )
    if state.phase in (Phase.ROLLED_BACK, Phase.ABORTED) and state.reason != RolloutReason.CANARY_WITHDRAWN:
        ended = (False, reason, message)
        return TrafficOutcome(rollout, entries, ended, ended, (True, reason, message), served, stalled=True)
    complete = (False, str(Reason.ROLLOUT_COMPLETE), message)
    return TrafficOutcome(rollout, entries, None, complete, None, served)


def experiment_pass(
    variants: Sequence[Variant],
    window: WindowStart | None,
    applied: bool,
    counters: Counters,
    monotonic: float,
    describe: str = "version",
) -> tuple[WindowStart | None, TrafficOutcome]:
    """A held A/B experiment: its fixed weights, each variant's figures since they were in place, and
    a Progressing that says so (an experiment never promotes). `describe` names what a variant is."""
    weights = {v.version: v.weight for v in variants}
    key = ("experiment", tuple(sorted(weights.items())))
    start, windows = step_windows(window, key, applied, counters, list(weights), monotonic)
    held = hold_experiment(variants, {v: w.analysis() for v, w in windows.items()}, describe=describe)
    entries = traffic_entries(windows, dict.fromkeys(weights, "variant"), weights)
    return start, TrafficOutcome(None, entries, None, (False, held.reason, held.message))


def with_problem(
    outcome: TrafficOutcome, reason: str, message: str, *, stalled: bool = False
) -> TrafficOutcome:
    """A problem outside the rollout (a router Triton refused, a variant whose staging failed): the
    model is Degraded, and not Ready when `stalled` (only a change ends it)."""
    degraded = (True, reason, message)
    if stalled:
        return replace(outcome, ready=(False, reason, message), degraded=degraded, stalled=True)
    return replace(outcome, degraded=degraded)
