"""A TritonModel's rollout as the engine reads it: the plan and limits from spec.rollout, and the manual
command from its annotation."""

from __future__ import annotations

from collections.abc import Mapping

from triton_operator.api.tritonmodel import RolloutStrategy, TritonModelSpec
from triton_operator.render.labels import COMMAND_ANNOTATION
from triton_operator.rollout.analysis import AnalysisLimits
from triton_operator.rollout.plan import RolloutPlan, Step
from triton_operator.rollout.state import Command, CommandAction

# The annotation's value is the command and anything after it (a timestamp) makes each command new; one
# is done once.


def plan_of(spec: TritonModelSpec, subject: str = "version") -> tuple[RolloutPlan, AnalysisLimits]:
    """The plan (its steps; Immediate is one step straight to 100%) and the analysis limits; `subject`
    is what the traffic moves between: "version" inside a server, "server" across a Gateway's pools."""
    rollout = spec.effective_rollout()
    analysis = rollout.effective_analysis()
    steps = rollout.effective_steps() or [(100, 0.0)]
    plan = RolloutPlan(
        tuple(Step(weight, pause) for weight, pause in steps),
        float(analysis.interval_seconds),
        subject=subject,
        immediate=rollout.strategy is RolloutStrategy.IMMEDIATE,
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
