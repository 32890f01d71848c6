"""A rollout as status keeps it (RolloutState), what an SRE can ask of it (Command), and what the
machine's decision says (Decision): the vocabulary of rollout/machine.py and everything that reads it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from triton_operator.conditions import rfc3339
from triton_operator.rollout.analysis import Verdict


class Phase(enum.StrEnum):
    """Where a canary rollout is: moving through its steps, or ended one of three ways."""

    PROGRESSING = "Progressing"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


class Action(enum.StrEnum):
    """What a decision does to traffic and to the rollout."""

    START = "Start"
    HOLD = "Hold"
    ADVANCE = "Advance"
    PROMOTE = "Promote"
    ROLLBACK = "Rollback"
    ABORT = "Abort"
    RESTART = "Restart"
    # A promotion is done: the old stable is retired (nothing routes to it, its files or copy are gone).
    SETTLE = "Settle"


class CommandAction(enum.StrEnum):
    """What an SRE can ask of a rollout."""

    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"


class RolloutReason(enum.StrEnum):
    """Reasons of rollout decisions: CamelCase, fit for a condition's reason and an Event's."""

    CANARY_STARTED = "CanaryStarted"
    CANARY_REPLACED = "CanaryReplaced"
    CANARY_WITHDRAWN = "CanaryWithdrawn"
    WAITING_FOR_METRICS = "WaitingForMetrics"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ANALYSIS_PASSING = "AnalysisPassing"
    STEP_ADVANCED = "StepAdvanced"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    PROMOTED_BY_COMMAND = "PromotedByCommand"
    ABORTED_BY_COMMAND = "AbortedByCommand"
    RETRIED = "Retried"
    COMMAND_IGNORED = "CommandIgnored"
    # A new canary is not ready on every replica yet: it gets no traffic, the current weights hold.
    CANARY_LOADING = "CanaryLoading"
    # One variant serves everything: where a rollout starts, and where a promotion ends.
    SERVING = "Serving"
    # Not canaries: the other strategies (rollout.traffic).
    ROLLED_OUT_IMMEDIATELY = "RolledOutImmediately"
    EXPERIMENT_RUNNING = "ExperimentRunning"


@dataclass(frozen=True)
class Command:
    """A manual command; each token is handled once (the last handled one is kept in the state)."""

    action: CommandAction
    token: str

    def __post_init__(self) -> None:
        CommandAction(self.action)  # ValueError for anything else
        if not self.token:
            raise ValueError("a command needs a non-empty token")


@dataclass(frozen=True)
class RolloutState:
    """A canary rollout as status keeps it; what the operator resumes from after a restart."""

    phase: Phase
    stable_version: str
    canary_version: str
    # 0-based; messages say "step 1/3".
    step_index: int
    # When the current step began; kept to whole seconds in UTC, as status stores it.
    step_started_at: datetime
    last_verdict: Verdict | None = None
    last_verdict_message: str = ""
    last_command_token: str | None = None
    # The reason and message of the decision that made this state (the cause, once the rollout ended).
    reason: str = RolloutReason.CANARY_STARTED
    message: str = ""

    def __post_init__(self) -> None:
        if self.step_started_at.tzinfo is None:
            raise ValueError("step_started_at must be timezone-aware, e.g. datetime.now(UTC)")
        if self.step_index < 0:
            raise ValueError(f"step_index must be 0 or more, got {self.step_index}")
        object.__setattr__(self, "phase", Phase(self.phase))
        if self.last_verdict is not None:
            object.__setattr__(self, "last_verdict", Verdict(self.last_verdict))
        object.__setattr__(self, "step_started_at", _whole_second(self.step_started_at))

    @property
    def promoted_over(self) -> str | None:
        """The old stable of a promotion that has not settled yet (it is retired next), else None."""
        promoted = self.phase is Phase.PROMOTED and self.stable_version != self.canary_version
        return self.stable_version if promoted else None

    def to_status(self) -> dict[str, Any]:
        """The state as a camelCase status object (keys without a value are left out)."""
        status: dict[str, Any] = {
            "phase": str(self.phase),
            "stableVersion": self.stable_version,
            "canaryVersion": self.canary_version,
            "stepIndex": self.step_index,
            "stepStartedAt": rfc3339(self.step_started_at),
            "reason": str(self.reason),
            "message": self.message,
        }
        if self.last_verdict is not None:
            status["lastVerdict"] = str(self.last_verdict)
        if self.last_verdict_message:
            status["lastVerdictMessage"] = self.last_verdict_message
        if self.last_command_token is not None:
            status["lastCommandToken"] = self.last_command_token
        return status

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RolloutState:
        """The state a status object written by to_status holds; ValueError naming what is wrong."""
        try:
            verdict = status.get("lastVerdict")
            return cls(
                phase=Phase(status["phase"]),
                stable_version=str(status["stableVersion"]),
                canary_version=str(status["canaryVersion"]),
                step_index=int(status["stepIndex"]),
                step_started_at=datetime.fromisoformat(str(status["stepStartedAt"])),
                last_verdict=Verdict(verdict) if verdict is not None else None,
                last_verdict_message=str(status.get("lastVerdictMessage", "")),
                last_command_token=status.get("lastCommandToken"),
                reason=str(status.get("reason", RolloutReason.CANARY_STARTED)),
                message=str(status.get("message", "")),
            )
        except KeyError as error:
            raise ValueError(f"rollout status lacks {error.args[0]}") from error
        except (TypeError, ValueError) as error:
            raise ValueError(f"rollout status is not readable: {error}") from error


@dataclass(frozen=True)
class Decision:
    """The next state, the weights to apply, and why: a reason and a message (an Event's type is the
    reason's own severity, conditions.Reason)."""

    state: RolloutState
    canary_weight: int
    action: Action
    reason: str
    message: str
    # When decide should run again; None once the rollout has ended.
    next_decision_at: datetime | None

    @property
    def weights(self) -> dict[str, int]:
        """Percent of traffic by variant: the state's stable and canary keys (one key once they are one)."""
        return weights_of(self.state, self.canary_weight)

    @property
    def retire(self) -> str | None:
        """The variant a promotion left without traffic, to retire (unload its files, remove its copy);
        once the caller says it is gone (decide's `retired`), the rollout settles on the canary."""
        return self.state.promoted_over

    @property
    def in_progress(self) -> bool:
        """Traffic is moving or about to: a step runs, or a new canary loads before its first step."""
        return self.state.phase is Phase.PROGRESSING or self.reason == RolloutReason.CANARY_LOADING


def weights_of(state: RolloutState, canary_weight: int) -> dict[str, int]:
    """Percent of traffic by variant key, stable first."""
    if state.stable_version == state.canary_version:
        return {state.canary_version: 100}
    return {state.stable_version: 100 - canary_weight, state.canary_version: canary_weight}


def describe_weights(weights: Mapping[str, int], subject: str) -> str:
    """'version 1 90%, version 2 10%'."""
    return ", ".join(f"{subject} {key} {weight}%" for key, weight in weights.items())


def settled(key: str, now: datetime, subject: str = "version", token: str | None = None) -> RolloutState:
    """One variant serving everything: where a rollout starts when status has none."""
    message = f"{subject} {key} serves 100%"
    reason = RolloutReason.SERVING
    return RolloutState(Phase.PROMOTED, key, key, 0, now, None, "", token, reason, message)


def _whole_second(moment: datetime) -> datetime:
    """The moment in UTC without its fraction of a second, so a state survives status unchanged."""
    return moment.astimezone(UTC).replace(microsecond=0)
