"""The canary state machine: a table of transitions, then sequences (waiting, resuming, commands once)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from triton_operator.conditions import rfc3339
from triton_operator.rollout.analysis import AnalysisLimits, Assessment, VariantWindow, Verdict, assess
from triton_operator.rollout.machine import begin, decide
from triton_operator.rollout.plan import RolloutPlan, Step
from triton_operator.rollout.state import (
    Action,
    Command,
    CommandAction,
    Decision,
    Phase,
    RolloutReason,
    RolloutState,
)

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 2, 10, 0, 0, tzinfo=UTC)
PLAN = RolloutPlan((Step(10, 60), Step(50, 120), Step(100, 0)), interval_s=30)
LIMITS = AnalysisLimits(min_requests=200, max_failure_ratio=0.01, max_latency_ratio=2.0)
STABLE = VariantWindow(1_000, 0, 2.4, None)
PASSING = assess(STABLE, VariantWindow(1_234, 0, 2.5, None), LIMITS)
INCONCLUSIVE = assess(STABLE, VariantWindow(37, 0, 2.5, None), LIMITS)
FAILING = assess(STABLE, VariantWindow(200, 40, 2.5, None), LIMITS)

PROGRESSING, PROMOTED, ROLLED_BACK, ABORTED = (
    Phase.PROGRESSING,
    Phase.PROMOTED,
    Phase.ROLLED_BACK,
    Phase.ABORTED,
)
R = RolloutReason


def at(step: int = 0, phase: Phase = PROGRESSING, **changes: Any) -> RolloutState:
    """A state of canary 2 against stable 1 at a step that started at T0."""
    return replace(RolloutState(phase, "1", "2", step, T0), **changes)


def cmd(action: str, token: str = "t1") -> Command:
    return Command(CommandAction(action), token)


def test_begin_starts_at_step_one_with_its_weight() -> None:
    decision = begin(PLAN, "1", "2", T0 + timedelta(microseconds=700))
    assert (decision.action, decision.reason) == (Action.START, R.CANARY_STARTED)
    assert decision.weights == {"1": 90, "2": 10}
    assert decision.state == RolloutState(
        PROGRESSING, "1", "2", 0, T0, reason=R.CANARY_STARTED, message=decision.message
    )
    assert decision.message == (
        "canary version 2 against stable 1: step 1/3 (10%), next decision at 2025-01-02T10:00:30Z"
    )


# id, state, assessment, seconds since the step started, command, the spec's canary version,
# expected: action reason phase step-index canary-weight event
TRANSITIONS = [
    ("passing-during-pause-holds", at(0), PASSING, 10, None, None, "Hold AnalysisPassing Progressing 0 10"),
    (
        "passing-after-pause-advances",
        at(0),
        PASSING,
        60,
        None,
        None,
        "Advance StepAdvanced Progressing 1 50",
    ),
    (
        "pause-elapsed-but-inconclusive-holds",
        at(0),
        INCONCLUSIVE,
        600,
        None,
        None,
        "Hold AnalysisInconclusive Progressing 0 10",
    ),
    (
        "still-inconclusive-no-new-event",
        at(0, reason=R.ANALYSIS_INCONCLUSIVE),
        INCONCLUSIVE,
        900,
        None,
        None,
        "Hold AnalysisInconclusive Progressing 0 10",
    ),
    (
        "no-metrics-holds-never-aborts",
        at(0),
        None,
        3_600,
        None,
        None,
        "Hold WaitingForMetrics Progressing 0 10",
    ),
    (
        "failed-rolls-back-at-once",
        at(0),
        FAILING,
        1,
        None,
        None,
        "Rollback RolledBack RolledBack 0 0",
    ),
    ("failed-at-step-2", at(1), FAILING, 500, None, None, "Rollback RolledBack RolledBack 1 0"),
    ("last-step-passes-promotes", at(2), PASSING, 30, None, None, "Promote Promoted Promoted 2 100"),
    (
        "zero-pause-still-lasts-an-interval",
        at(2),
        PASSING,
        29,
        None,
        None,
        "Hold AnalysisPassing Progressing 2 100",
    ),
    (
        "step-started-in-the-future-holds",
        at(0),
        PASSING,
        -5,
        None,
        None,
        "Hold AnalysisPassing Progressing 0 10",
    ),
    (
        "promoted-holds-all-canary",
        at(2, PROMOTED, reason=R.PROMOTED),
        FAILING,
        9_999,
        None,
        None,
        "Hold Promoted Promoted 2 100",
    ),
    (
        "rolled-back-holds-all-stable",
        at(1, ROLLED_BACK, reason=R.ROLLED_BACK),
        PASSING,
        9_999,
        None,
        None,
        "Hold RolledBack RolledBack 1 0",
    ),
    ("abort", at(1), PASSING, 500, cmd("abort"), None, "Abort AbortedByCommand Aborted 1 0"),
    ("promote-now", at(0), None, 1, cmd("promote"), None, "Promote PromotedByCommand Promoted 0 100"),
    (
        "promote-beats-a-failed-analysis",
        at(0),
        FAILING,
        1,
        cmd("promote"),
        None,
        "Promote PromotedByCommand Promoted 0 100",
    ),
    (
        "promote-after-rollback",
        at(1, ROLLED_BACK),
        None,
        1,
        cmd("promote"),
        None,
        "Promote PromotedByCommand Promoted 1 100",
    ),
    (
        "retry-after-rollback",
        at(1, ROLLED_BACK),
        FAILING,
        1,
        cmd("retry"),
        None,
        "Restart Retried Progressing 0 10",
    ),
    (
        "retry-after-abort",
        at(2, ABORTED),
        None,
        1,
        cmd("retry"),
        None,
        "Restart Retried Progressing 0 10",
    ),
    (
        "retry-while-progressing-ignored",
        at(1),
        PASSING,
        500,
        cmd("retry"),
        None,
        "Hold CommandIgnored Progressing 1 50",
    ),
    (
        "retry-when-promoted-ignored",
        at(2, PROMOTED),
        None,
        1,
        cmd("retry"),
        None,
        "Hold CommandIgnored Promoted 2 100",
    ),
    (
        "abort-when-promoted-ignored",
        at(2, PROMOTED),
        None,
        1,
        cmd("abort"),
        None,
        "Hold CommandIgnored Promoted 2 100",
    ),
    (
        "abort-when-rolled-back-ignored",
        at(1, ROLLED_BACK),
        None,
        1,
        cmd("abort"),
        None,
        "Hold CommandIgnored RolledBack 1 0",
    ),
    (
        "promote-when-promoted-ignored",
        at(2, PROMOTED),
        None,
        1,
        cmd("promote"),
        None,
        "Hold CommandIgnored Promoted 2 100",
    ),
    (
        "handled-token-is-not-redone",
        at(0, last_command_token="t1"),
        PASSING,
        60,
        cmd("abort"),
        None,
        "Advance StepAdvanced Progressing 1 50",
    ),
    (
        "same-canary-changes-nothing",
        at(0),
        PASSING,
        60,
        None,
        "2",
        "Advance StepAdvanced Progressing 1 50",
    ),
    ("new-canary-restarts", at(1), PASSING, 500, None, "3", "Restart CanaryReplaced Progressing 0 10"),
    (
        "new-canary-after-rollback",
        at(1, ROLLED_BACK),
        None,
        1,
        None,
        "3",
        "Restart CanaryReplaced Progressing 0 10",
    ),
    (
        "new-canary-after-promotion",
        at(2, PROMOTED),
        None,
        1,
        None,
        "3",
        "Start CanaryStarted Progressing 0 10",
    ),
    (
        "back-to-old-after-promotion",
        at(2, PROMOTED),
        None,
        1,
        None,
        "1",
        "Start CanaryStarted Progressing 0 10",
    ),
    (
        "new-canary-before-a-command",
        at(1),
        None,
        1,
        cmd("promote"),
        "3",
        "Restart CanaryReplaced Progressing 0 10",
    ),
    ("stable-again-withdraws", at(1), PASSING, 500, None, "1", "Abort CanaryWithdrawn Aborted 1 0"),
    (
        "withdrawn-stays",
        at(1, ABORTED, reason=R.CANARY_WITHDRAWN),
        None,
        1,
        None,
        "1",
        "Hold CanaryWithdrawn Aborted 1 0",
    ),
    (
        "withdrawn-then-asked-again",
        at(1, ABORTED, reason=R.CANARY_WITHDRAWN),
        None,
        1,
        None,
        "2",
        "Start CanaryStarted Progressing 0 10",
    ),
    (
        "retry-of-a-withdrawn-canary-ignored",
        at(1, ABORTED, reason=R.CANARY_WITHDRAWN),
        None,
        1,
        cmd("retry"),
        "1",
        "Hold CommandIgnored Aborted 1 0",
    ),
    (
        "aborted-by-command-stays-aborted",
        at(1, ABORTED, reason=R.ABORTED_BY_COMMAND),
        None,
        1,
        None,
        "2",
        "Hold AbortedByCommand Aborted 1 0",
    ),
]


@pytest.mark.parametrize(
    ("state", "assessment", "elapsed", "command", "canary", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in TRANSITIONS],
)
def test_transitions(
    state: RolloutState,
    assessment: Assessment | None,
    elapsed: float,
    command: Command | None,
    canary: str | None,
    expected: str,
) -> None:
    now = T0 + timedelta(seconds=elapsed)
    decision = decide(PLAN, state, assessment, now, command, canary_version=canary)
    new = decision.state
    got = f"{decision.action} {decision.reason} {new.phase} {new.step_index} {decision.canary_weight}"
    assert got == expected
    assert sum(decision.weights.values()) == 100
    assert new.reason == (state.reason if decision.reason is R.COMMAND_IGNORED else decision.reason)
    assert (decision.next_decision_at is None) == (new.phase is not PROGRESSING)
    # A command is handled once: its token is kept, unless a new canary version put the command off.
    restarted = decision.action in (Action.START, Action.RESTART) and decision.reason is not R.RETRIED
    if command is not None:
        assert new.last_command_token == (state.last_command_token if restarted else command.token)


def test_versions_after_a_new_canary() -> None:
    replaced = decide(PLAN, at(1), None, T0, canary_version="3").state
    assert (replaced.stable_version, replaced.canary_version, replaced.step_started_at) == ("1", "3", T0)
    after_promotion = decide(PLAN, at(2, PROMOTED), None, T0, canary_version="3").state
    assert (after_promotion.stable_version, after_promotion.canary_version) == ("2", "3")


@pytest.mark.parametrize(
    ("state", "assessment", "elapsed", "message", "next_in"),
    [
        pytest.param(
            at(0),
            PASSING,
            10,
            "step 1/3 (10%): canary passing, advances at 2025-01-02T10:01:00Z, next check at "
            "2025-01-02T10:00:40Z; 1,234 canary and 1,000 stable requests (200 required); failure ratio "
            "0.000 <= 0.010 (0 of 1,234 requests); p99 2.5 ms is 1.04x stable's 2.4 ms <= 2.0x",
            30,
            id="passing",
        ),
        pytest.param(
            at(0),
            PASSING,
            45,
            "step 1/3 (10%): canary passing, advances at 2025-01-02T10:01:00Z; 1,234 canary and 1,000 "
            "stable requests (200 required); failure ratio 0.000 <= 0.010 (0 of 1,234 requests); "
            "p99 2.5 ms is 1.04x stable's 2.4 ms <= 2.0x",
            15,
            id="passing-next-is-the-step-end",
        ),
        pytest.param(
            at(2),
            PASSING,
            10,
            None,
            20,
            id="last-step-promotes-at-its-end",
        ),
        pytest.param(
            at(0),
            INCONCLUSIVE,
            100,
            "step 1/3 (10%): holding, inconclusive: 37 of 200 requests on canary; "
            "next decision at 2025-01-02T10:02:10Z",
            30,
            id="inconclusive",
        ),
        pytest.param(
            at(1),
            None,
            5,
            "step 2/3 (50%): waiting for metrics; next decision at 2025-01-02T10:00:35Z",
            30,
            id="waiting",
        ),
        pytest.param(
            at(1),
            FAILING,
            5,
            "rolled back to version 1 at step 2/3 (50%): failure ratio 0.200 > 0.010 (40 of 200 requests)",
            None,
            id="rollback-names-the-measured-ratio",
        ),
        pytest.param(
            at(0),
            PASSING,
            60,
            "step 1/3 (10%) passed: 1,234 canary and 1,000 stable requests (200 required); failure ratio "
            "0.000 <= 0.010 (0 of 1,234 requests); p99 2.5 ms is 1.04x stable's 2.4 ms <= 2.0x; "
            "now step 2/3 (50%), next decision at 2025-01-02T10:01:30Z",
            30,
            id="advance",
        ),
        pytest.param(
            at(2),
            PASSING,
            30,
            "promoted version 2 (stable was 1) after step 3/3 (100%) passed: 1,234 canary and 1,000 "
            "stable requests (200 required); failure ratio 0.000 <= 0.010 (0 of 1,234 requests); "
            "p99 2.5 ms is 1.04x stable's 2.4 ms <= 2.0x",
            None,
            id="promote",
        ),
    ],
)
def test_messages_and_next_decision(
    state: RolloutState,
    assessment: Assessment | None,
    elapsed: float,
    message: str | None,
    next_in: float | None,
) -> None:
    now = T0 + timedelta(seconds=elapsed)
    decision = decide(PLAN, state, assessment, now)
    if message is not None:
        assert decision.message == message
    assert decision.state.message == decision.message
    expected = now + timedelta(seconds=next_in) if next_in is not None else None
    assert decision.next_decision_at == expected


@pytest.mark.parametrize(
    ("state", "command", "message"),
    [
        (at(1), cmd("abort", "a"), "aborted by command 'a' at step 2/3 (50%): 100% to stable version 1"),
        (at(1), cmd("promote", "p"), "promoted version 2 by command 'p' at step 2/3 (50%)"),
        (
            at(1, ROLLED_BACK),
            cmd("promote", "p"),
            "promoted version 2 by command 'p' at step 2/3 (50%) after it was rolled back",
        ),
        (
            at(1, ROLLED_BACK),
            cmd("retry", "r"),
            "retrying canary version 2 by command 'r': step 1/3 (10%), next decision at 2025-01-02T10:00:30Z",
        ),
        (
            at(1),
            cmd("retry", "r"),
            "command retry 'r' ignored: the rollout is progressing at step 2/3 (50%); "
            "retry follows a rollback or an abort",
        ),
        (
            at(1, ABORTED),
            cmd("abort", "a"),
            "command abort 'a' ignored: it was aborted already: 100% to stable version 1",
        ),
        (
            at(2, PROMOTED),
            cmd("abort", "a"),
            "command abort 'a' ignored: version 2 is already promoted; roll out the previous one to go back",
        ),
    ],
)
def test_command_messages(state: RolloutState, command: Command, message: str) -> None:
    assert decide(PLAN, state, None, T0).message != message
    assert decide(PLAN, state, None, T0, command).message == message


def test_an_ignored_command_while_progressing_asks_to_decide_again_at_once() -> None:
    now = T0 + timedelta(seconds=500)
    decision = decide(PLAN, at(1), PASSING, now, cmd("retry"))
    assert decision.next_decision_at == now
    # The next call (same command still there) is the analysis it put off.
    assert decide(PLAN, decision.state, PASSING, now, cmd("retry")).action is Action.ADVANCE


def test_a_command_is_done_once() -> None:
    aborted = decide(PLAN, at(1), None, T0, cmd("abort", "a1")).state
    retried = decide(PLAN, aborted, None, T0 + timedelta(seconds=5), cmd("retry", "r1"))
    assert (retried.action, retried.state.phase, retried.state.step_index) == (Action.RESTART, PROGRESSING, 0)
    # The annotation still says retry r1 on the next calls: nothing restarts again.
    later = T0 + timedelta(seconds=65)
    again = decide(PLAN, retried.state, PASSING, later, cmd("retry", "r1"))
    assert (again.action, again.state.step_index) == (Action.ADVANCE, 1)
    assert decide(PLAN, again.state, PASSING, later, cmd("retry", "r1")).action is Action.HOLD
    # Only the last handled token is kept: any other token is a new command.
    assert decide(PLAN, again.state, PASSING, later, cmd("abort", "a2")).action is Action.ABORT


def test_same_inputs_same_decision() -> None:
    for _, state, assessment, elapsed, command, canary, _ in TRANSITIONS:
        now = T0 + timedelta(seconds=elapsed)
        first = decide(PLAN, state, assessment, now, command, canary_version=canary)
        assert decide(PLAN, state, assessment, now, command, canary_version=canary) == first


def test_deciding_again_on_a_stale_window_right_after_advancing_holds() -> None:
    instant = RolloutPlan((Step(10, 0), Step(20, 0), Step(30, 0)), interval_s=30)
    now = T0 + timedelta(seconds=30)
    advanced = decide(instant, at(0), PASSING, now)
    assert (advanced.action, advanced.state.step_index) == (Action.ADVANCE, 1)
    # The same (previous step's) assessment again at once: no step is skipped.
    again = decide(instant, advanced.state, PASSING, now + timedelta(milliseconds=10))
    assert (again.action, again.state.step_index) == (Action.HOLD, 1)


def test_inconclusive_then_traffic_comes() -> None:
    decision = begin(PLAN, "1", "2", T0)
    timeline = [
        (30, None, Action.HOLD, R.WAITING_FOR_METRICS),
        (60, INCONCLUSIVE, Action.HOLD, R.ANALYSIS_INCONCLUSIVE),
        (90, INCONCLUSIVE, Action.HOLD, R.ANALYSIS_INCONCLUSIVE),
        (120, PASSING, Action.ADVANCE, R.STEP_ADVANCED),
    ]
    for elapsed, assessment, action, reason in timeline:
        now = T0 + timedelta(seconds=elapsed)
        decision = decide(PLAN, decision.state, assessment, now)
        assert (decision.action, decision.reason) == (action, reason), elapsed
        assert decision.next_decision_at == now + timedelta(seconds=30)
    assert decision.state.step_started_at == T0 + timedelta(seconds=120)
    assert decision.weights == {"1": 50, "2": 50}
    assert decision.state.last_verdict is Verdict.SUCCESSFUL


def _walk(plan: RolloutPlan, through_status: bool) -> list[tuple[Action, int, int]]:
    """Decide every 20 s on passing traffic until promoted, maybe through status (an operator restart)."""
    decision = begin(plan, "1", "2", T0 + timedelta(microseconds=250))
    seen = [(decision.action, decision.state.step_index, decision.canary_weight)]
    now = T0
    while decision.state.phase is PROGRESSING:
        now += timedelta(seconds=20, microseconds=123)
        state = decision.state
        if through_status:
            state = RolloutState.from_status(json.loads(json.dumps(state.to_status())))
        decision = decide(plan, state, PASSING, now)
        seen.append((decision.action, decision.state.step_index, decision.canary_weight))
    return seen


def test_walk_to_promotion_visits_each_step_once_and_a_restart_changes_nothing() -> None:
    seen = _walk(PLAN, through_status=False)
    assert [(action, weight) for action, _, weight in seen if action is not Action.HOLD] == [
        (Action.START, 10),
        (Action.ADVANCE, 50),
        (Action.ADVANCE, 100),
        (Action.PROMOTE, 100),
    ]
    assert seen == _walk(PLAN, through_status=True)


def test_resume_after_restart_keeps_the_step_and_its_pause() -> None:
    before = decide(PLAN, at(0), PASSING, T0 + timedelta(seconds=60, microseconds=900))
    assert before.state.step_started_at == T0 + timedelta(seconds=60)  # whole seconds, as status keeps
    restored = RolloutState.from_status(before.state.to_status())
    assert restored == before.state
    # Step 2's pause (120 s) counts from its start before the restart, not from the restart.
    resumed = decide(PLAN, restored, PASSING, T0 + timedelta(seconds=179))
    assert (resumed.action, resumed.state.step_index) == (Action.HOLD, 1)
    done = decide(PLAN, restored, PASSING, T0 + timedelta(seconds=180))
    assert (done.action, done.state.step_index, done.canary_weight) == (Action.ADVANCE, 2, 100)


def test_a_last_step_below_100_promotes_after_it_passes() -> None:
    plan = RolloutPlan((Step(20, 60), Step(80, 60)), interval_s=30)
    decision = decide(plan, at(1), PASSING, T0 + timedelta(seconds=60))
    assert (decision.action, decision.canary_weight, decision.state.phase) == (Action.PROMOTE, 100, PROMOTED)
    assert decide(plan, at(1), PASSING, T0 + timedelta(seconds=59)).canary_weight == 80


def test_a_plan_edited_to_fewer_steps_holds_at_its_last() -> None:
    plan = RolloutPlan((Step(25, 60), Step(75, 60)), interval_s=30)
    decision = decide(plan, at(2), INCONCLUSIVE, T0 + timedelta(seconds=5))
    assert (decision.state.step_index, decision.canary_weight) == (1, 75)
    assert decision.message.startswith("step 2/2 (75%): holding")


@pytest.mark.parametrize(
    "state",
    [
        at(0),
        at(1, ROLLED_BACK, last_verdict=Verdict.FAILED, last_verdict_message="failure ratio 0.2 > 0.01"),
        at(
            2,
            PROMOTED,
            last_verdict=Verdict.SUCCESSFUL,
            last_verdict_message="ok",
            last_command_token="t-9",
            reason=R.PROMOTED_BY_COMMAND,
            message="promoted",
        ),
        replace(at(0), step_started_at=datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_state_round_trips_through_status(state: RolloutState) -> None:
    status = state.to_status()
    assert all(key[0].islower() and "_" not in key for key in status)
    assert RolloutState.from_status(json.loads(json.dumps(status))) == state


def test_status_shape() -> None:
    state = at(1, ROLLED_BACK, last_verdict=Verdict.FAILED, last_verdict_message="m", last_command_token="t")
    assert state.to_status() == {
        "phase": "RolledBack",
        "stableVersion": "1",
        "canaryVersion": "2",
        "stepIndex": 1,
        "stepStartedAt": rfc3339(T0),
        "reason": "CanaryStarted",
        "message": "",
        "lastVerdict": "Failed",
        "lastVerdictMessage": "m",
        "lastCommandToken": "t",
    }


@pytest.mark.parametrize(
    ("status", "match"),
    [
        ({k: v for k, v in at(0).to_status().items() if k != "stepStartedAt"}, "lacks stepStartedAt"),
        ({**at(0).to_status(), "phase": "Paused"}, "not readable"),
        ({**at(0).to_status(), "stepStartedAt": "yesterday"}, "not readable"),
        ({**at(0).to_status(), "stepStartedAt": "2025-01-02T10:00:00"}, "not readable"),
        ({**at(0).to_status(), "lastVerdict": "Great"}, "not readable"),
    ],
)
def test_from_status_refuses_what_it_cannot_read(status: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RolloutState.from_status(status)


def test_refuses_naive_times_bad_plans_and_bad_commands() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(PLAN, at(0), None, datetime(2025, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        RolloutState(PROGRESSING, "1", "2", 0, datetime(2025, 1, 2))
    with pytest.raises(ValueError, match=r"plan\.steps\[1\]\.weight"):
        decide(RolloutPlan((Step(50), Step(40))), at(0), None, T0)
    with pytest.raises(ValueError):
        Command("pause", "t")
    with pytest.raises(ValueError, match="token"):
        Command(CommandAction.ABORT, "")


def test_decision_weights_by_variant() -> None:
    decision = Decision(at(0), 30, Action.HOLD, "X", "m", None)
    assert decision.weights == {"1": 70, "2": 30}
    settled_state = RolloutState(PROMOTED, "2", "2", 0, T0)
    assert Decision(settled_state, 100, Action.HOLD, "X", "m", None).weights == {"2": 100}
