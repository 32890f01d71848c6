"""Plan and spec checks with field paths; held A/B experiments."""

from __future__ import annotations

import pytest
from triton_operator.rollout.analysis import VariantWindow
from triton_operator.rollout.plan import RolloutPlan, Step, validate_plan
from triton_operator.rollout.traffic import Variant, hold_experiment, validate_variants

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("plan", "problems"),
    [
        (RolloutPlan((Step(10, 60), Step(50, 60), Step(100))), []),
        (RolloutPlan((Step(100),)), []),
        (RolloutPlan(()), ["spec.rollout.steps: at least one step is required"]),
        (
            RolloutPlan((Step(10), Step(50), Step(40))),
            ["spec.rollout.steps[2].weight: 40 is not above the previous step's 50"],
        ),
        (
            RolloutPlan((Step(10), Step(10))),
            ["spec.rollout.steps[1].weight: 10 is not above the previous step's 10"],
        ),
        (
            RolloutPlan((Step(0), Step(101), Step(5))),
            [
                "spec.rollout.steps[0].weight: 0 is not within 1..100",
                "spec.rollout.steps[1].weight: 101 is not within 1..100",
            ],
        ),
        (
            RolloutPlan((Step(10, -1.0), Step(20, float("inf")))),
            [
                "spec.rollout.steps[0].pauseSeconds: -1.0 is not a duration of 0 or more seconds",
                "spec.rollout.steps[1].pauseSeconds: inf is not a duration of 0 or more seconds",
            ],
        ),
        (RolloutPlan((Step(10),), interval_s=0), ["spec.rollout.intervalSeconds: 0 is not above 0 seconds"]),
    ],
)
def test_validate_plan(plan: RolloutPlan, problems: list[str]) -> None:
    assert validate_plan(plan) == problems


def test_validate_plan_field_names_follow_the_crd() -> None:
    plan = RolloutPlan((Step(10, -5),), interval_s=-1)
    assert validate_plan(plan, "spec.canary", pause_field="pause", interval_field="analysis.interval") == [
        "spec.canary.steps[0].pause: -5 is not a duration of 0 or more seconds",
        "spec.canary.analysis.interval: -1 is not above 0 seconds",
    ]


AB = [Variant("control", "1", 90), Variant("treatment", "2", 10)]


@pytest.mark.parametrize(
    ("variants", "problems"),
    [
        (AB, []),
        ([Variant("a", "1", 50), Variant("b", "2", 30), Variant("c", "3", 20)], []),
        (
            [Variant("a", "1", 100)],
            ["spec.experiment.variants: an experiment needs at least 2 variants, got 1"],
        ),
        (
            [Variant("a", "1", 60), Variant("b", "2", 30)],
            ["spec.experiment.variants: weights sum to 90, not 100"],
        ),
        (
            [Variant("a", "1", 50), Variant("a", "1", 50)],
            [
                "spec.experiment.variants[1].name: 'a' is already spec.experiment.variants[0]'s",
                "spec.experiment.variants[1].version: '1' is already spec.experiment.variants[0]'s; "
                "variants must differ to be told apart",
            ],
        ),
        (
            [Variant("", "1", 150), Variant("b", "2", -50)],
            [
                "spec.experiment.variants[0].name: a variant needs a name",
                "spec.experiment.variants[0].weight: 150 is not within 0..100",
                "spec.experiment.variants[1].weight: -50 is not within 0..100",
            ],
        ),
    ],
)
def test_validate_variants(variants: list[Variant], problems: list[str]) -> None:
    assert validate_variants(variants) == problems


def test_experiment_holds_its_weights_with_both_variants_figures() -> None:
    windows = {"1": VariantWindow(9_000, 9, 2.4, 0.3), "2": VariantWindow(1_000, 5, 2.6, None)}
    traffic = hold_experiment(AB, windows)
    assert traffic.weights == {"control": 90, "treatment": 10}
    assert traffic.reason == "ExperimentRunning"
    assert traffic.message == (
        "experiment holds control 90% / treatment 10% (never promotes): "
        "control (version 1, 90%): 9,000 requests, 9 failed (0.001), p99 2.4 ms, queue time 0.3 ms; "
        "treatment (version 2, 10%): 1,000 requests, 5 failed (0.005), p99 2.6 ms"
    )


def test_experiment_before_metrics() -> None:
    traffic = hold_experiment(AB)
    assert traffic.weights == {"control": 90, "treatment": 10}
    assert traffic.message.endswith(
        "control (version 1, 90%): no metrics yet; treatment (version 2, 10%): no metrics yet"
    )


def test_experiment_refuses_invalid_variants() -> None:
    with pytest.raises(ValueError, match="weights sum to 110"):
        hold_experiment([Variant("a", "1", 60), Variant("b", "2", 50)])
