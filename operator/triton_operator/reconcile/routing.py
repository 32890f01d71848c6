"""A routed model's traffic (canary rollout or A/B experiment): decide the weights, put them in the
router on every replica, and clean up after a promotion.

The decisions are the pure functions of `rollout/`; this module only gathers their inputs (status,
Triton's per-version counters from the server's scrapes, a manual command) and applies their outputs.
Order of operations (measured on real Triton, see DESIGN.md): a version gets traffic only once it is
READY on every replica; after a promotion the router sends everything to the new version first, and
only then is the old version's folder removed and the versions model reloaded (which unloads it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from triton_operator.api.common import GROUP, ConditionStatus
from triton_operator.api.tritonmodel import ModelConditionType, TritonModelSpec
from triton_operator.conditions import DecidedCondition, Reason, rfc3339, with_kstatus
from triton_operator.observe.metrics import Scrape
from triton_operator.observe.model import ObservedModel, model_conditions, model_stuck
from triton_operator.observe.rollout import (
    Counters,
    VersionWindow,
    target_counters,
    traffic_entries,
    version_window,
)
from triton_operator.observe.server import triton_is_up
from triton_operator.render.router import Variant as RouterVariant
from triton_operator.render.router import router_config, router_files
from triton_operator.rollout.analysis import AnalysisLimits, Assessment, assess
from triton_operator.rollout.machine import (
    Command,
    CommandAction,
    Decision,
    Phase,
    RolloutReason,
    RolloutState,
    decide,
)
from triton_operator.rollout.plan import RolloutPlan, Step
from triton_operator.rollout.pools import canary_weights
from triton_operator.rollout.traffic import Variant as ExperimentVariant
from triton_operator.rollout.traffic import hold_experiment
from triton_operator.triton import client as triton
from triton_operator.triton.client import ModelState

log = logging.getLogger(__name__)
# `kubectl annotate tritonmodel NAME tritonoperator.dev/rollout="promote $(date +%s)" --overwrite`:
# the value is the command and anything after it (a timestamp) makes each command new; one is done once.
COMMAND_ANNOTATION = f"{GROUP}/rollout"
SERVING = "Serving"  # the reason of a settled routed model (one version, 100%)
ROUTER_LOADING = "RouterLoading"


@dataclass
class RoutingMemory:
    """What one routed model's passes remember (rebuilt after a restart: routers are loaded again)."""

    # Pod uid -> the router config (variants, sticky key) loaded there.
    routers: dict[str, tuple[tuple[RouterVariant, ...], str]] = field(default_factory=dict)
    # The counters a step's window starts from, and which step (canary, index, start) they belong to.
    baseline: Counters = field(default_factory=dict)
    baseline_at: float = 0.0
    baseline_for: tuple[str, int, str] | None = None
    # When the current weights were in place on every replica (time.monotonic()); None while applying.
    applied_at: float | None = None
    # (pod uid, staging Job) where a version no longer served was found loaded and a reload was asked
    # (once: a reload that keeps it means its files are still there, and the next retire removes them).
    stale_reloads: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class RoutingOutcome:
    """What status says about a routed model's traffic, and how its conditions read."""

    rollout: dict[str, Any] | None
    traffic: list[dict[str, Any]]
    # (status, reason, message) to put in Ready, Progressing and Degraded; None keeps the model's own.
    ready: tuple[bool, str, str] | None
    progressing: tuple[bool, str, str]
    degraded: tuple[bool, str, str] | None
    # The version the old stable can be removed for (after a promotion, once nothing routes to it).
    retire: str | None = None
    # The version most traffic goes to (status.servedVersion).
    served_version: int | None = None
    # Only a change ends what it says (a rollback, an abort, a variant whose staging failed): Stalled=True.
    stalled: bool = False


def plan_of(spec: TritonModelSpec) -> tuple[RolloutPlan, AnalysisLimits]:
    rollout = spec.effective_rollout()
    analysis = rollout.effective_analysis()
    # Immediate has no steps of its own: as a plan it is one step, straight to 100% (a TritonModel
    # behind a Gateway with the default strategy moves across servers this way; the empty plan made
    # every pass of such a model fail and it never got a status).
    steps = rollout.effective_steps() or [(100, 0.0)]
    plan = RolloutPlan(
        tuple(Step(weight, pause) for weight, pause in steps), float(analysis.interval_seconds)
    )
    limits = AnalysisLimits(
        min_requests=analysis.min_requests,
        max_failure_ratio=analysis.max_failure_ratio,
        max_latency_ratio=analysis.max_latency_ratio,
        max_queue_ratio=analysis.max_queue_ratio,
        latency_floor_ms=analysis.latency_floor_ms,
    )
    return plan, limits


def command_of(annotations: Mapping[str, str] | None) -> Command | None:
    """The manual command in the annotation, if it names one (anything else is left alone)."""
    value = (annotations or {}).get(COMMAND_ANNOTATION, "").strip()
    action = value.split(" ", 1)[0].lower()
    if action not in {str(a) for a in CommandAction}:
        return None
    return Command(CommandAction(action), value)


def settled(version: str, now: datetime, token: str | None = None) -> RolloutState:
    """One version serving everything: where a routed model starts, and where a promotion ends."""
    message = f"version {version} serves 100%"
    return RolloutState(Phase.PROMOTED, version, version, 0, now, None, "", token, SERVING, message)


def read_state(status: Mapping[str, Any]) -> RolloutState | None:
    try:
        return RolloutState.from_status(status["rollout"]) if status.get("rollout") else None
    except ValueError as exc:
        log.warning("ignoring an unreadable status.rollout: %s", exc)
        return None


def ready_versions(index: Sequence[ModelState], target: str) -> set[str]:
    return {row.version for row in index if row.name == target and row.state == "READY" and row.version}


class Routing:
    """The router and the rollout decisions of routed models (called by the model reconciler)."""

    def __init__(self, read_index: Callable[[Mapping[str, Any]], list[ModelState]]):
        self.read_index = read_index

    def canary_pass(
        self,
        spec: TritonModelSpec,
        status: Mapping[str, Any],
        annotations: Mapping[str, str] | None,
        memory: RoutingMemory,
        *,
        requested_ready_everywhere: bool,
        scrapes: Mapping[str, Scrape],
        public: str,
        target: str,
        now: datetime,
    ) -> tuple[RolloutState, dict[str, int], RoutingOutcome]:
        """The rollout's next state, the weights by version, and what status says."""
        plan, limits = plan_of(spec)
        requested = str(spec.version)
        state = read_state(status) or settled(requested, now)
        command = command_of(annotations)
        base = state.canary_version if state.phase is Phase.PROMOTED else state.stable_version
        if requested not in (state.canary_version, base) and not requested_ready_everywhere:
            # A new version gets no traffic until it is READY on every replica.
            weights = self._weights_of(plan, state)
            message = (
                f"version {requested} is staging or loading; it gets traffic once READY on every replica "
                f"(until then: {_split(weights)})"
            )
            progressing = (True, "CanaryLoading", message)
            roles = {v: "stable" if v == base else "canary" for v in [*weights, requested]}
            entries = traffic_entries({}, roles, weights)
            ready = (False, "CanaryLoading", message)
            outcome = RoutingOutcome(state.to_status(), entries, ready, progressing, None, None, int(base))
            return state, weights, outcome
        current = target_counters(scrapes, target, public)
        assessment, windows = self._assess(plan, state, memory, current, limits, requested)
        decision = decide(plan, state, assessment, now, command, canary_version=requested)
        new = decision.state
        weights = self._weights_of(plan, new)
        outcome = self._outcome(plan, decision, windows)
        return new, weights, outcome

    @staticmethod
    def _weights_of(plan: RolloutPlan, state: RolloutState) -> dict[str, int]:
        return canary_weights(plan, state)

    def _assess(
        self,
        plan: RolloutPlan,
        state: RolloutState,
        memory: RoutingMemory,
        current: Counters,
        limits: AnalysisLimits,
        requested: str,
    ) -> tuple[Assessment | None, dict[str, VersionWindow]]:
        """The current step's window (since the weights were in place everywhere) and its verdict."""
        step = (state.canary_version, state.step_index, state.step_started_at.isoformat())
        if state.phase is not Phase.PROGRESSING or state.canary_version != requested:
            memory.baseline_for = None
            return None, {}
        if memory.baseline_for != step:
            if memory.applied_at is None:
                return None, {}  # the router is not at this step's weights everywhere yet
            memory.baseline, memory.baseline_at, memory.baseline_for = dict(current), time.monotonic(), step
            return None, {}
        seconds = time.monotonic() - memory.baseline_at
        windows = {
            v: version_window(memory.baseline, current, v, seconds)
            for v in (state.stable_version, state.canary_version)
        }
        canary = windows[state.canary_version].analysis()
        # At 100% the stable gets nothing to compare with: the canary is judged on its own figures.
        alone = self._weights_of(plan, state).get(state.canary_version, 0) >= 100
        stable = None if alone else windows[state.stable_version].analysis()
        return assess(stable, canary, limits), windows

    def _outcome(
        self, plan: RolloutPlan, decision: Decision, windows: Mapping[str, VersionWindow]
    ) -> RoutingOutcome:
        state = decision.state
        weights = self._weights_of(plan, state)
        roles = (
            {state.canary_version: "stable"}
            if state.stable_version == state.canary_version
            else {state.stable_version: "stable", state.canary_version: "canary"}
        )
        entries = traffic_entries(windows, roles, weights)
        rollout = state.to_status() | {
            "steps": len(plan.steps),
            "canaryWeight": weights.get(state.canary_version, 0)
            if state.stable_version != state.canary_version
            else 100,
            "message": decision.message,
        }
        if decision.next_decision_at is not None:
            rollout["nextDecisionAt"] = rfc3339(decision.next_decision_at)
        reason, message = str(state.reason), decision.message
        promoted = state.phase is Phase.PROMOTED
        served = int(state.canary_version if promoted else state.stable_version)
        if state.phase is Phase.PROGRESSING:
            ready, progressing = (False, reason, message), (True, reason, message)
            return RoutingOutcome(rollout, entries, ready, progressing, None, None, served)
        if (
            state.phase in (Phase.ROLLED_BACK, Phase.ABORTED)
            and state.reason != RolloutReason.CANARY_WITHDRAWN
        ):
            ended = (False, reason, message)
            degraded = (True, reason, message)
            return RoutingOutcome(rollout, entries, ended, ended, degraded, None, served, stalled=True)
        retire = state.stable_version if promoted and state.stable_version != state.canary_version else None
        complete = (False, str(Reason.ROLLOUT_COMPLETE), message)
        return RoutingOutcome(rollout, entries, None, complete, None, retire, served)

    @staticmethod
    def experiment_windows(
        memory: RoutingMemory,
        scrapes: Mapping[str, Scrape],
        public: str,
        target: str,
        weights: Mapping[str, int],
    ) -> dict[str, VersionWindow]:
        """Each variant's traffic since the experiment's weights were in place on every replica."""
        current = target_counters(scrapes, target, public)
        key = ("experiment", 0, json.dumps(dict(weights), sort_keys=True))
        if memory.baseline_for != key:
            if memory.applied_at is None:
                return {}
            memory.baseline, memory.baseline_at, memory.baseline_for = dict(current), time.monotonic(), key
            return {}
        seconds = time.monotonic() - memory.baseline_at
        return {v: version_window(memory.baseline, current, v, seconds) for v in weights}

    # -- the router on every replica ------------------------------------------------------------------
    def apply_router(
        self,
        pods: Sequence[Mapping[str, Any]],
        public: str,
        target: str,
        weights: Mapping[str, int],
        sticky_key: str,
        memory: RoutingMemory,
        stopped: Callable[[], bool],
    ) -> list[str]:
        """Load the router with `weights` on every ready pod that serves their versions; problems found."""
        variants = tuple(
            RouterVariant(target, int(v), w) for v, w in sorted(weights.items(), key=lambda i: int(i[0]))
        )
        wanted = (variants, sticky_key)
        problems = []
        everywhere = True
        for pod in pods:
            uid = pod["metadata"]["uid"]
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or not triton_is_up(pod):
                continue
            if memory.routers.get(uid) == wanted:
                continue
            everywhere = False
            if stopped():
                continue
            needed = {v for v, w in weights.items() if w > 0}
            missing = needed - ready_versions(self.read_index(pod), target)
            if missing:
                continue  # the versions load first (this pass or the next)
            endpoint = triton.TritonEndpoint(ip)
            try:
                config = router_config(
                    public, triton.model_config(endpoint, target), variants, sticky_key=sticky_key
                )
                triton.load_model(endpoint, public, config_json=json.dumps(config), files=router_files())
            except (triton.TritonError, ValueError) as exc:
                message = exc.message if isinstance(exc, triton.TritonError) else str(exc)
                problems.append(f"router on pod {pod['metadata']['name']}: {message}")
                continue
            memory.routers[uid] = wanted
            log.info("router %s on pod %s: %s", public, pod["metadata"]["name"], _split(weights))
        live = {p["metadata"]["uid"] for p in pods}
        for uid in set(memory.routers) - live:
            del memory.routers[uid]
        if everywhere:
            memory.applied_at = memory.applied_at or time.monotonic()
        else:
            memory.applied_at = None
        return problems


def _split(weights: Mapping[str, int]) -> str:
    return ", ".join(f"version {v} {w}%" for v, w in sorted(weights.items(), key=lambda i: int(i[0])))


def experiment_weights(spec: TritonModelSpec) -> dict[str, int]:
    assert spec.experiment is not None
    return {str(v.version): v.weight for v in spec.experiment.version_variants}


def experiment_outcome(spec: TritonModelSpec, windows: Mapping[str, VersionWindow]) -> RoutingOutcome:
    assert spec.experiment is not None
    variants = [
        ExperimentVariant(f"v{v.version}", str(v.version), v.weight) for v in spec.experiment.version_variants
    ]
    held = hold_experiment(variants, {v: w.analysis() for v, w in windows.items()})
    weights = experiment_weights(spec)
    entries = traffic_entries(
        windows, {str(v.version): "variant" for v in spec.experiment.version_variants}, weights
    )
    return RoutingOutcome(None, entries, None, (False, held.reason, held.message), None)


def routed_conditions(decided: Sequence[DecidedCondition], routed: RoutingOutcome) -> list[DecidedCondition]:
    """A routed model's conditions: its own (staging, loading), then what the rollout says on top.

    Ready is False while a rollout runs or after a rollback (`kubectl wait --for=condition=Ready`
    returns once the spec's version serves everything); Progressing says where the rollout is.
    """

    def condition(ctype: str, decided_by: tuple[bool, str, str]) -> DecidedCondition:
        ok, reason, message = decided_by
        return DecidedCondition(ctype, ConditionStatus.TRUE if ok else ConditionStatus.FALSE, reason, message)

    out = []
    for cond in decided:
        if cond.type == ModelConditionType.READY and routed.ready is not None and cond.status == "True":
            cond = condition(cond.type, routed.ready)
        elif cond.type == ModelConditionType.DEGRADED and routed.degraded is not None:
            cond = condition(cond.type, routed.degraded)
        out.append(cond)
    out.append(condition(ModelConditionType.PROGRESSING, routed.progressing))
    return out


def model_status_conditions(
    observed: ObservedModel, routed: RoutingOutcome | None = None
) -> list[DecidedCondition]:
    """Every condition a TritonModel (not through a Gateway) writes: its own from the observed facts, a
    routed model's rollout on top, and Reconciling and Stalled for kstatus (Flux) from both."""
    decided = model_conditions(observed)
    stuck = model_stuck(observed)
    if routed is not None:
        decided = routed_conditions(decided, routed)
        stuck = stuck or routed.stalled
    return with_kstatus(decided, stuck)


def variant_specs(spec: TritonModelSpec) -> list[TritonModelSpec]:
    """The spec of each experiment variant other than spec.version: its version from its own source."""
    if spec.experiment is None:
        return []
    return [
        spec.model_copy(update={"version": v.version, "source": v.source})
        for v in spec.experiment.version_variants
        if v.version != spec.version and v.source is not None
    ]


def router_everywhere(outcome: RoutingOutcome, memory: RoutingMemory, public: str) -> RoutingOutcome:
    """Clients reach a routed model only through its router: not Ready before it is on every replica."""
    if memory.applied_at is not None or outcome.ready is not None:
        return outcome
    message = f"the router serving {public} is not on every ready replica yet (its versions load first)"
    return replace(outcome, ready=(False, ROUTER_LOADING, message))


def with_router_problems(outcome: RoutingOutcome, problems: Sequence[str]) -> RoutingOutcome:
    """A router Triton refused on some pod makes the model Degraded, naming the pods and why."""
    if not problems:
        return outcome
    return replace(outcome, degraded=(True, str(Reason.LOAD_FAILED), "; ".join(problems)))
