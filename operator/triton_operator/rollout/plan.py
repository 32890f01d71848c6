"""A canary plan (ordered weight steps, an analysis interval) and the spec checks CEL cannot easily say."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """Send `weight` percent to the canary for at least `pause_s` seconds of passing analysis."""

    weight: int
    pause_s: float = 0.0


@dataclass(frozen=True)
class RolloutPlan:
    """Strictly increasing steps; promotion follows the last one (at once at 100%, else from its weight)."""

    steps: tuple[Step, ...]
    # How often analysis runs while a step holds, and the shortest time any step lasts.
    interval_s: float = 30.0
    # What the rollout moves traffic between, as messages name it: versions of a model inside one
    # server (its router), or servers behind a Gateway (its routes). The machine is the same.
    subject: str = "version"
    # Strategy Immediate: a new canary takes 100% at once, unmeasured, once it is ready.
    immediate: bool = False


def validate_plan(
    plan: RolloutPlan,
    path: str = "spec.rollout",
    pause_field: str = "pauseSeconds",
    interval_field: str = "intervalSeconds",
) -> list[str]:
    """What is wrong with the plan, one message per problem naming its field path."""
    problems = []
    if not plan.steps:
        problems.append(f"{path}.steps: at least one step is required")
    previous: int | None = None
    for index, step in enumerate(plan.steps):
        where = f"{path}.steps[{index}]"
        weight = step.weight
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
            problems.append(f"{where}.weight: {weight} is not within 1..100")
        else:
            if previous is not None and weight <= previous:
                problems.append(f"{where}.weight: {weight} is not above the previous step's {previous}")
            previous = weight
        if not (math.isfinite(step.pause_s) and step.pause_s >= 0):
            problems.append(f"{where}.{pause_field}: {step.pause_s} is not a duration of 0 or more seconds")
    if not (math.isfinite(plan.interval_s) and plan.interval_s > 0):
        problems.append(f"{path}.{interval_field}: {plan.interval_s} is not above 0 seconds")
    return problems
