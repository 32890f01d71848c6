"""The canary state machine: (plan, state, assessment, now, command) -> the next state, weights and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from triton_operator.conditions import rfc3339
from triton_operator.rollout.analysis import AnalysisLimits, Assessment, VariantWindow, Verdict, assess
from triton_operator.rollout.plan import RolloutPlan, validate_plan
from triton_operator.rollout.state import (
    Action,
    Command,
    CommandAction,
    Decision,
    Phase,
    RolloutReason,
    RolloutState,
    _whole_second,
    describe_weights,
    weights_of,
)


def _check(plan: RolloutPlan, now: datetime) -> None:
    """Refuse an invalid plan or a naive now: validate the spec (validate_plan) before deciding."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    problems = validate_plan(plan, path="plan")
    if problems:
        raise ValueError("; ".join(problems))


def _index(plan: RolloutPlan, state: RolloutState) -> int:
    """The current step; a plan edited to fewer steps holds at its last one."""
    return min(state.step_index, len(plan.steps) - 1)


def _where(plan: RolloutPlan, index: int) -> str:
    """'step 2/3 (50%)'."""
    return f"step {index + 1}/{len(plan.steps)} ({plan.steps[index].weight}%)"


def _step_end(plan: RolloutPlan, started: datetime, index: int) -> datetime:
    """When a step may pass: after its pause, and never before one analysis interval of its own traffic."""
    return started + timedelta(seconds=max(plan.steps[index].pause_s, plan.interval_s))


def _next_decision(plan: RolloutPlan, now: datetime, step_end: datetime) -> datetime:
    """The next analysis (every interval, so a failure rolls back at once), or the step's end if sooner."""
    check = now + timedelta(seconds=plan.interval_s)
    return min(check, step_end) if step_end > now else check


def _weight(plan: RolloutPlan, state: RolloutState) -> int:
    """The canary's percent in a state."""
    if state.phase is Phase.PROGRESSING:
        return plan.steps[_index(plan, state)].weight
    return 100 if state.phase is Phase.PROMOTED else 0


def _begin(
    plan: RolloutPlan,
    stable: str,
    canary: str,
    now: datetime,
    token: str | None,
    reason: RolloutReason,
    action: Action,
    what: str,
) -> Decision:
    """A rollout (re)started at step 1 now."""
    started = _whole_second(now)
    next_at = _next_decision(plan, now, _step_end(plan, started, 0))
    message = f"{what}: {_where(plan, 0)}, next decision at {rfc3339(next_at)}"
    state = RolloutState(Phase.PROGRESSING, stable, canary, 0, started, None, "", token, reason, message)
    return Decision(state, plan.steps[0].weight, action, reason, message, next_at)


def begin(plan: RolloutPlan, stable: str, canary: str, now: datetime) -> Decision:
    """Start a canary of `canary` against `stable` at step 1."""
    _check(plan, now)
    what = f"canary {plan.subject} {canary} against stable {stable}"
    return _begin(plan, stable, canary, now, None, RolloutReason.CANARY_STARTED, Action.START, what)


def _ended(plan: RolloutPlan, state: RolloutState) -> Decision:
    """An ended rollout holds its weights and repeats its cause; nothing changes, nothing is due."""
    return Decision(state, _weight(plan, state), Action.HOLD, state.reason, state.message, None)


def _new_canary(plan: RolloutPlan, state: RolloutState, canary: str, now: datetime) -> Decision | None:
    """The spec asks for another canary than the state's: start over for it, or withdraw the canary."""
    base = _base(state)
    token = state.last_command_token
    if plan.immediate and canary != state.canary_version:
        reason = RolloutReason.ROLLED_OUT_IMMEDIATELY
        message = (
            f"{plan.subject} {canary} serves 100% (strategy Immediate); {plan.subject} {base} is retired next"
        )
        promoted = RolloutState(Phase.PROMOTED, base, canary, 0, now, None, "", token, reason, message)
        return Decision(promoted, 100, Action.PROMOTE, reason, message, None)
    if canary != base:
        if state.phase is Phase.PROMOTED or canary == state.canary_version:
            what = f"canary {plan.subject} {canary} against stable {base}"
            return _begin(plan, base, canary, now, token, RolloutReason.CANARY_STARTED, Action.START, what)
        what = f"{plan.subject} {canary} replaces canary {state.canary_version}, against stable {base}"
        return _begin(plan, base, canary, now, token, RolloutReason.CANARY_REPLACED, Action.RESTART, what)
    if state.phase is not Phase.PROGRESSING:
        return None  # already all on the stable the spec asks for
    message = (
        f"canary {plan.subject} {state.canary_version} withdrawn at {_where(plan, _index(plan, state))}: "
        f"the spec asks for stable {plan.subject} {base} again, 100% to it"
    )
    reason = RolloutReason.CANARY_WITHDRAWN
    ended = replace(state, phase=Phase.ABORTED, reason=reason, message=message)
    return Decision(ended, 0, Action.ABORT, reason, message, None)


def _base(state: RolloutState) -> str:
    """What serves when the canary does not: a promoted canary, else the stable."""
    return state.canary_version if state.phase is Phase.PROMOTED else state.stable_version


def _loading(plan: RolloutPlan, state: RolloutState, canary: str, waiting_for: str) -> Decision:
    """A new canary gets no traffic until it is ready on every replica; the current weights hold and
    the state is unchanged (its first step starts once it is ready)."""
    weight = _weight(plan, state)
    until = describe_weights(weights_of(state, weight), plan.subject)
    why = f" ({waiting_for})" if waiting_for else ""
    message = (
        f"{plan.subject} {canary} gets traffic once it is ready on every replica{why}; until then: {until}"
    )
    reason = RolloutReason.CANARY_LOADING
    return Decision(state, weight, Action.HOLD, reason, message, None)


def _settle(plan: RolloutPlan, state: RolloutState, retired: str, now: datetime) -> Decision:
    """A promotion whose old stable is gone: the canary is the one variant serving everything."""
    message = f"{plan.subject} {state.canary_version} promoted and serves 100%; {retired}"
    reason = RolloutReason.SERVING
    done = replace(
        state,
        stable_version=state.canary_version,
        step_index=0,
        step_started_at=_whole_second(now),
        reason=reason,
        message=message,
    )
    return Decision(done, 100, Action.SETTLE, reason, message, None)


_ENDED_AS = {Phase.ROLLED_BACK: "was rolled back", Phase.ABORTED: "was aborted"}


def _ignored(plan: RolloutPlan, handled: RolloutState, command: Command, why: str, now: datetime) -> Decision:
    """A command that does not apply: handled (not retried), weights unchanged, decide again at once."""
    message = f"command {command.action} {command.token!r} ignored: {why}"
    next_at = now if handled.phase is Phase.PROGRESSING else None
    weight = _weight(plan, handled)
    return Decision(handled, weight, Action.HOLD, RolloutReason.COMMAND_IGNORED, message, next_at)


def _command(plan: RolloutPlan, state: RolloutState, command: Command, now: datetime) -> Decision:
    """Apply a new manual command (it wins over this call's analysis)."""
    handled = replace(state, last_command_token=command.token)
    where = _where(plan, _index(plan, state))
    by = f"by command {command.token!r}"
    action = CommandAction(command.action)
    if state.reason == RolloutReason.CANARY_WITHDRAWN and action is not CommandAction.ABORT:
        why = f"the spec no longer asks for canary {plan.subject} {state.canary_version}"
        return _ignored(plan, handled, command, why, now)
    if action is CommandAction.PROMOTE:
        if state.phase is Phase.PROMOTED:
            return _ignored(
                plan, handled, command, f"{plan.subject} {state.canary_version} is already promoted", now
            )
        after = f" after it {_ENDED_AS[state.phase]}" if state.phase in _ENDED_AS else ""
        message = f"promoted {plan.subject} {state.canary_version} {by} at {where}{after}"
        reason = RolloutReason.PROMOTED_BY_COMMAND
        promoted = replace(handled, phase=Phase.PROMOTED, reason=reason, message=message)
        return Decision(promoted, 100, Action.PROMOTE, reason, message, None)
    if action is CommandAction.ABORT:
        if state.phase is Phase.PROGRESSING:
            message = f"aborted {by} at {where}: 100% to stable {plan.subject} {state.stable_version}"
            reason = RolloutReason.ABORTED_BY_COMMAND
            aborted = replace(handled, phase=Phase.ABORTED, reason=reason, message=message)
            return Decision(aborted, 0, Action.ABORT, reason, message, None)
        if state.phase is Phase.PROMOTED:
            why = (
                f"{plan.subject} {state.canary_version} is already promoted; "
                "roll out the previous one to go back"
            )
        else:
            why = f"it {_ENDED_AS[state.phase]} already: 100% to stable {plan.subject} {state.stable_version}"
        return _ignored(plan, handled, command, why, now)
    if state.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        what = f"retrying canary {plan.subject} {state.canary_version} {by}"
        return _begin(
            plan,
            state.stable_version,
            state.canary_version,
            now,
            command.token,
            RolloutReason.RETRIED,
            Action.RESTART,
            what,
        )
    if state.phase is Phase.PROMOTED:
        why = f"{plan.subject} {state.canary_version} is already promoted"
    else:
        why = f"the rollout is progressing at {where}; retry follows a rollback or an abort"
    return _ignored(plan, handled, command, why, now)


def _hold(
    state: RolloutState,
    index: int,
    weight: int,
    assessment: Assessment | None,
    reason: RolloutReason,
    message: str,
    next_at: datetime,
) -> Decision:
    """Stay at this step; remember the verdict."""
    held = replace(
        state,
        step_index=index,
        last_verdict=assessment.verdict if assessment else None,
        last_verdict_message=assessment.message if assessment else "",
        reason=reason,
        message=message,
    )
    return Decision(held, weight, Action.HOLD, reason, message, next_at)


def _progress(
    plan: RolloutPlan, state: RolloutState, assessment: Assessment | None, now: datetime
) -> Decision:
    """A progressing step: roll back on Failed, hold on Inconclusive or a running pause, else move on."""
    index = _index(plan, state)
    where, weight = _where(plan, index), plan.steps[index].weight
    end = _step_end(plan, state.step_started_at, index)
    next_at = _next_decision(plan, now, end)
    last = index == len(plan.steps) - 1
    if assessment is None:
        message = f"{where}: waiting for metrics; next decision at {rfc3339(next_at)}"
        return _hold(state, index, weight, None, RolloutReason.WAITING_FOR_METRICS, message, next_at)
    verdict, measured = assessment.verdict, assessment.message
    if verdict is Verdict.FAILED:
        reason = RolloutReason.ROLLED_BACK
        message = f"rolled back to {plan.subject} {state.stable_version} at {where}: {measured}"
        rolled_back = replace(
            state,
            phase=Phase.ROLLED_BACK,
            step_index=index,
            last_verdict=verdict,
            last_verdict_message=measured,
            reason=reason,
            message=message,
        )
        return Decision(rolled_back, 0, Action.ROLLBACK, reason, message, None)
    if verdict is Verdict.INCONCLUSIVE:
        reason = RolloutReason.ANALYSIS_INCONCLUSIVE
        message = f"{where}: holding, {measured}; next decision at {rfc3339(next_at)}"
        return _hold(state, index, weight, assessment, reason, message, next_at)
    if now < end:
        verb = "promotes" if last else "advances"
        when = f"{verb} at {rfc3339(end)}"
        if next_at != end:
            when += f", next check at {rfc3339(next_at)}"
        message = f"{where}: canary passing, {when}; {measured}"
        return _hold(state, index, weight, assessment, RolloutReason.ANALYSIS_PASSING, message, next_at)
    passed = f"{where} passed: {measured}"
    if last:
        reason = RolloutReason.PROMOTED
        message = (
            f"promoted {plan.subject} {state.canary_version} (stable was {state.stable_version}) "
            f"after {passed}"
        )
        promoted = replace(
            state,
            phase=Phase.PROMOTED,
            step_index=index,
            last_verdict=verdict,
            last_verdict_message=measured,
            reason=reason,
            message=message,
        )
        return Decision(promoted, 100, Action.PROMOTE, reason, message, None)
    started, following = _whole_second(now), index + 1
    following_next = _next_decision(plan, now, _step_end(plan, started, following))
    reason = RolloutReason.STEP_ADVANCED
    message = f"{passed}; now {_where(plan, following)}, next decision at {rfc3339(following_next)}"
    advanced = replace(
        state,
        step_index=following,
        step_started_at=started,
        last_verdict=verdict,
        last_verdict_message=measured,
        reason=reason,
        message=message,
    )
    weight = plan.steps[following].weight
    return Decision(advanced, weight, Action.ADVANCE, reason, message, following_next)


def assess_step(
    plan: RolloutPlan,
    state: RolloutState,
    windows: Mapping[str, VariantWindow],
    limits: AnalysisLimits,
) -> Assessment | None:
    """The current step's verdict from each variant's window (None before there is a window). At 100%
    the stable gets nothing to compare with: the canary is judged on its own figures."""
    if state.canary_version not in windows:
        return None
    alone = _weight(plan, state) >= 100
    stable = None if alone else windows.get(state.stable_version)
    return assess(stable, windows[state.canary_version], limits)


def decide(
    plan: RolloutPlan,
    state: RolloutState,
    assessment: Assessment | None,
    now: datetime,
    command: Command | None = None,
    *,
    canary_version: str | None = None,
    canary_ready: bool = True,
    waiting_for: str = "",
    retired: str | None = None,
) -> Decision:
    """The next step of a canary rollout; pure, so the same inputs give the same decision.

    `assessment` covers only the current step's traffic (since state.step_started_at), None before any
    metrics. `canary_version` is the version the spec asks for now (None: the state's); `canary_ready`
    whether it is ready on every replica (`waiting_for` says for what, if not); `retired` what was done
    to retire a promotion's old stable once nothing routes to it (None: not yet). In order:
    - a new canary that is not ready holds the current weights (CanaryLoading), state unchanged;
    - another canary version restarts at step 1 for it (a promoted canary becomes the stable); the
      stable version again withdraws a running canary (100% stable, Aborted); a command in the same call
      waits for the next one; under strategy Immediate a new canary is promoted at once;
    - a command not handled before: promote (now, from any phase but Promoted), abort (a progressing
      rollout, 100% stable), retry (after a rollback or an abort, from step 1); else it is ignored;
    - a promotion whose old stable is retired settles: the canary is the one variant (Serving);
    - an ended rollout holds its weights;
    - Failed rolls back at once to 100% stable; Inconclusive or no metrics hold (never pass, never abort);
      Successful holds until the step's pause (and at least one interval) has run since the step started,
      then advances, or promotes after the last step.
    A restart resumes from the state: the step and its start time are kept, so no step is skipped or
    repeated, and no pause restarts.
    """
    _check(plan, now)
    if canary_version is not None and (
        canary_version != state.canary_version or state.reason == RolloutReason.CANARY_WITHDRAWN
    ):
        if not canary_ready and canary_version not in (state.canary_version, _base(state)):
            return _loading(plan, state, canary_version, waiting_for)
        changed = _new_canary(plan, state, canary_version, now)
        if changed is not None:
            return changed
    if command is not None and command.token != state.last_command_token:
        return _command(plan, state, command, now)
    if retired is not None and state.promoted_over is not None:
        return _settle(plan, state, retired, now)
    if state.phase is not Phase.PROGRESSING:
        return _ended(plan, state)
    return _progress(plan, state, assessment, now)
