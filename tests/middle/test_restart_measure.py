"""The restart measure of issue 18, point 3: a restarted operator resumes without redoing work.

At each of 10 points across a canary, a rollback, an experiment, a Gateway split and a server roll, the
operator's memory is thrown away (a fresh OperatorState, new reconcilers, a watch that lists everything
again) and the scenario goes on. Counted: the staging (and removal) Jobs created, the repository loads
and the router reloads made after the restart that the same scenario without the restart did not
make. The issue wants 0 at every point. Reported beside them, not counted: server pods taken out of
service, Deployments applied again, and how many more rounds of passes the scenario took (a rollout
step's window that starts over takes longer).

Every point passes: what a restarted operator needs to resume is in the cluster (status.rollout,
status.stagingJob/stagedDigest, status.stagedVariants for an experiment's other versions). A point that
regresses fails here with the Jobs and loads the restart cost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.scenario import Tally, World
from tests.support.scenarios import MODEL, SCENARIOS

pytestmark = pytest.mark.unit


POINTS = [
    pytest.param("canary", "canary/staging", id="canary/staging"),
    pytest.param("canary", "canary/first-step", id="canary/first-step"),
    pytest.param("canary", "canary/last-step", id="canary/last-step"),
    pytest.param("canary", "canary/retiring", id="canary/retiring"),
    pytest.param("rollback", "rollback/first-step", id="rollback/first-step"),
    pytest.param("experiment", "experiment/staging", id="experiment/staging"),
    pytest.param("experiment", "experiment/serving", id="experiment/serving"),
    pytest.param("gateway", "gateway/copies-staging", id="gateway/copies-staging"),
    pytest.param("gateway", "gateway/serving", id="gateway/serving"),
    pytest.param("roll", "roll/new-pods", id="roll/new-pods"),
]


@dataclass(frozen=True)
class Run:
    tally: Tally
    outcome: dict[str, Any]


def outcome(world: World) -> dict[str, Any]:
    """What a user reads at the end (the version served, the rollout's phase, the loads, Ready) and
    what each Triton serves: its models' versions and the files they were loaded from."""
    status = world.status(MODEL)
    rollout = status.get("rollout") or {}
    return {
        "servedVersion": status.get("servedVersion"),
        "loaded": status.get("loaded"),
        "phase": rollout.get("phase"),
        "stableVersion": rollout.get("stableVersion"),
        "Ready": world.condition(MODEL, "Ready"),
        "served": sorted(
            sorted((model, sorted(triton.files(model).items())) for model in triton.loaded)
            for triton in world.tritons
        ),
    }


def run(scenario: str, restart_at: str | None) -> Run:
    with pytest.MonkeyPatch.context() as monkeypatch:
        world = World(monkeypatch)
        world.restart_at = restart_at
        try:
            SCENARIOS[scenario](world)
            assert restart_at is None or world.restarts == 1, f"the scenario never reached {restart_at}"
            return Run(world.tally(), outcome(world))
        finally:
            world.close()


_BASELINES: dict[str, Run] = {}


def baseline(scenario: str) -> Run:
    if scenario not in _BASELINES:
        _BASELINES[scenario] = run(scenario, None)
    return _BASELINES[scenario]


def extra(restarted: list[Any], base: list[Any]) -> list[Any]:
    """What the restarted run did that the run without a restart did not (as a multiset)."""
    return sorted((Counter(restarted) - Counter(base)).elements())


@pytest.mark.parametrize(("scenario", "point"), POINTS)
def test_a_restarted_operator_redoes_no_work(scenario: str, point: str) -> None:
    base, restarted = baseline(scenario), run(scenario, point)
    jobs = extra(restarted.tally.jobs, base.tally.jobs)
    loads = extra(restarted.tally.loads, base.tally.loads)
    routers = extra(restarted.tally.router_loads, base.tally.router_loads)
    gone = extra(restarted.tally.out_of_service, base.tally.out_of_service)
    applies = extra(restarted.tally.applies, base.tally.applies)
    rounds = restarted.tally.rounds - base.tally.rounds
    report = (
        f"restart at {point}: extra Jobs {jobs}, extra repository loads {loads}, extra router reloads "
        f"{routers} (not counted: pods taken out of service {gone}, Deployments applied again {applies}, "
        f"{rounds:+d} rounds of passes to the end)"
    )
    print(report)
    assert restarted.outcome == base.outcome, (
        f"{report}; the user sees {restarted.outcome}, not {base.outcome}"
    )
    assert (jobs, loads, routers) == ([], [], []), report
