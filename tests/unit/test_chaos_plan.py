"""The chaos plan (tests/chaos/plan.py): seeded, repeatable, covering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.converge import pvc_problems, step_problems
from tests.chaos.plan import FAULTS, FULL_RUN, SCENARIOS, combos, covered, plan


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2**31 - 1, 123456789])
@pytest.mark.parametrize("count", [0, 1, 3, FULL_RUN, 40])
def test_the_same_seed_gives_the_same_plan(seed: int, count: int) -> None:
    assert plan(seed, count) == plan(seed, count)
    assert len(plan(seed, count)) == count


@pytest.mark.parametrize("seed", range(50))
def test_a_full_run_covers_every_scenario_point_and_fault(seed: int) -> None:
    faults, scenarios, points = covered(plan(seed, FULL_RUN))
    assert faults == set(FAULTS)
    assert scenarios == set(SCENARIOS)
    assert points == {(s, p) for s, ps in SCENARIOS.items() for p in ps}


@pytest.mark.parametrize("seed", range(20))
def test_a_short_run_draws_distinct_faults_first(seed: int) -> None:
    kills = plan(seed, 3)
    assert len({k.fault for k in kills}) == 3
    assert len({k.scenario for k in kills}) == 3


def test_seeds_differ() -> None:
    assert len({tuple(plan(seed, FULL_RUN)) for seed in range(20)}) > 10


@pytest.mark.parametrize("seed", range(10))
def test_every_kill_is_a_possible_combination(seed: int) -> None:
    possible = set(combos())
    assert all((k.scenario, k.point, k.fault) in possible for k in plan(seed, 60))
    assert [k.index for k in plan(seed, 5)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("fault", "where"),
    [
        ("staging-pod-kill", {("staging", "job-running")}),
        ("s3-outage", {("staging", "job-created"), ("staging", "job-running")}),
    ],
)
def test_faults_only_where_they_mean_something(fault: str, where: set[tuple[str, str]]) -> None:
    assert {(s, p) for s, p, f in combos() if f == fault} == where


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        plan(1, -1)


# --- the invariants' pure parts (tests/chaos/converge.py) -----------------------------------------

T0, T1, T2 = "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:06+00:00", "2026-01-01T00:00:09+00:00"


def test_steps_in_order_once_each_are_fine() -> None:
    seen = [
        ("Promoted", "None", 0, "None"),
        ("Progressing", "2", 0, T0),
        ("Progressing", "2", 1, T1),
        ("Promoted", "2", 1, T1),
    ]
    assert step_problems(seen, "2", 2, promoted=True) == []


def test_a_step_started_again_is_repeated() -> None:
    seen = [("Progressing", "2", 0, T0), ("Progressing", "2", 0, T2), ("Progressing", "2", 1, T1)]
    assert any("started again" in p for p in step_problems(seen, "2", 2, promoted=False))


def test_a_gap_is_a_skipped_step_and_promotion_needs_every_step() -> None:
    seen = [("Progressing", "2", 0, T0), ("Progressing", "2", 2, T1), ("Promoted", "2", 2, T1)]
    found = step_problems(seen, "2", 3, promoted=True)
    assert any("skipped" in p for p in found) and any("not all 3" in p for p in found)


def test_a_step_going_back_is_reported() -> None:
    seen = [("Progressing", "2", 0, T0), ("Progressing", "2", 1, T1), ("Progressing", "2", 0, T0)]
    assert any("(back)" in p for p in step_problems(seen, "2", 2, promoted=False))


def test_pvc_temp_folders_and_half_written_versions_are_found(tmp_path: Path) -> None:
    (tmp_path / ".staging-scorer-abc").mkdir()
    (tmp_path / ".trash-x").mkdir()
    versions = tmp_path / "scorer~versions"
    (versions / "1").mkdir(parents=True)
    (versions / "1" / ".staged.json").write_text("{}")
    (versions / "2").mkdir()
    found = pvc_problems(tmp_path, "scorer", model_present=True)
    assert len(found) == 3, found
    assert any("scorer~versions/2 is half-written" in p for p in found)
    assert pvc_problems(tmp_path / "missing", "scorer", model_present=True) == []


def test_a_deleted_models_folders_must_be_gone(tmp_path: Path) -> None:
    (tmp_path / "scorer").mkdir()
    assert pvc_problems(tmp_path, "scorer", model_present=False) == [
        "pvc: scorer of the deleted model is still in the repository"
    ]
