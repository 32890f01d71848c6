"""The chaos plan: a seed gives an ordered list of kills (scenario, kill point, fault). Pure: no I/O, no
clock; the same seed and count give the same plan.

A full run (count >= FULL_RUN) covers every scenario, every kill point and every fault; a smaller count
takes the first kills of that covering order (each one a new fault or scenario while any is left).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FULL_RUN = 20

# Scenario -> its kill points (names of predicates in points.py).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "staging": ("job-created", "job-running", "job-done-unrecorded"),
    "loading": ("between-replicas",),
    "rollout": ("step-started", "step-holding", "last-step", "promoted"),
    "rollback": ("canary-failing", "rolled-back"),
    "server-spec": ("pods-rolling",),
    "delete-model": ("finalizer-pending",),
    "delete-server": ("server-deleting",),
}

FAULTS = (
    "operator-kill",
    "apiserver-restart",
    "etcd-pause",
    "triton-kill",
    "staging-pod-kill",
    "s3-outage",
)

# Faults that only make sense at some points: the staging pod exists only while its Job runs, S3 is
# only read while staging, a Triton process is only worth killing while it loads or serves a step.
_ONLY_AT: dict[str, set[tuple[str, str]]] = {
    "staging-pod-kill": {("staging", "job-running")},
    "s3-outage": {("staging", "job-created"), ("staging", "job-running")},
    "triton-kill": {
        ("loading", "between-replicas"),
        ("rollout", "step-started"),
        ("rollout", "step-holding"),
        ("rollout", "last-step"),
        ("rollback", "canary-failing"),
        ("server-spec", "pods-rolling"),
    },
}


@dataclass(frozen=True)
class Kill:
    index: int
    scenario: str
    point: str
    fault: str

    def __str__(self) -> str:
        return f"#{self.index} {self.scenario}@{self.point} <- {self.fault}"


def combos() -> list[tuple[str, str, str]]:
    """Every (scenario, point, fault) that can happen, in a fixed order."""
    out = []
    for scenario, points in SCENARIOS.items():
        for point in points:
            for fault in FAULTS:
                allowed = _ONLY_AT.get(fault)
                if allowed is None or (scenario, point) in allowed:
                    out.append((scenario, point, fault))
    return out


def plan(seed: int, count: int) -> list[Kill]:
    """`count` kills drawn by `seed`: first a greedy cover of every fault, scenario and point (ties
    broken by the seed's order), then draws from every combination."""
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    rng = random.Random(seed)
    order = combos()
    rng.shuffle(order)
    uncovered: set[tuple[str, ...]] = (
        {("fault", f) for f in FAULTS}
        | {("scenario", s) for s in SCENARIOS}
        | {("point", s, p) for s, ps in SCENARIOS.items() for p in ps}
    )

    def gain(c: tuple[str, str, str]) -> int:
        s, p, f = c
        # Faults and scenarios weigh more: a short run gets the most kinds of fault first.
        return (
            2 * (("fault", f) in uncovered)
            + 2 * (("scenario", s) in uncovered)
            + (("point", s, p) in uncovered)
        )

    chosen: list[tuple[str, str, str]] = []
    while uncovered and len(chosen) < count:
        best = max(order, key=gain)  # max keeps the first of equals: the seed decides ties
        if gain(best) == 0:
            break
        chosen.append(best)
        s, p, f = best
        uncovered -= {("fault", f), ("scenario", s), ("point", s, p)}
    while len(chosen) < count:
        chosen.append(rng.choice(order))
    return [Kill(i + 1, s, p, f) for i, (s, p, f) in enumerate(chosen)]


def covered(kills: list[Kill]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """The faults, scenarios and (scenario, point)s a plan touches."""
    return (
        {k.fault for k in kills},
        {k.scenario for k in kills},
        {(k.scenario, k.point) for k in kills},
    )
