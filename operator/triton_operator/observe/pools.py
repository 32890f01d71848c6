"""A TritonModel split across servers through a Gateway: what each pool (a server holding, or about to
hold, the model's copy) looks like, and the split's conditions from that and the engine's outcome (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from triton_operator.api.common import ConditionStatus
from triton_operator.api.tritonmodel import ModelConditionType
from triton_operator.conditions import DecidedCondition, Reason
from triton_operator.observe.rollout import Said, TrafficOutcome


@dataclass(frozen=True)
class Pool:
    """What one server holding (or about to hold) a copy looks like now."""

    server: str
    exists: bool
    ready_pods: int
    copy_ready: bool
    copy_message: str
    # The copy says Degraded (its staging or load failed): a problem, not progress.
    copy_failed: bool = False
    # spec.replicas 0 on the server: nothing serves there, on purpose.
    scaled_to_zero: bool = False
    # The copy says Stalled (only a change ends its problem: its staging failed, say).
    copy_stalled: bool = False

    @property
    def serving(self) -> bool:
        return self.exists and self.ready_pods > 0 and self.copy_ready


def split_conditions(
    pools: Mapping[str, Pool],
    desired: Mapping[str, int],
    weights: Mapping[str, int],
    outcome: TrafficOutcome,
    routed: DecidedCondition,
) -> list[DecidedCondition]:
    """Ready, Progressing, Degraded and Routed of a model served through a Gateway (pure).

    Problems (Degraded) are what someone must fix: a server that does not exist, a route the gateway
    refused, a copy that failed, a pool whose replicas are down. Progress (Progressing, and not Ready
    for the same reason, which makes its Events Normal) is what time fixes: copies being placed,
    staged and loaded, the gateway not having answered yet, a rollout's steps.
    """
    wanted = [pools[s] for s, w in desired.items() if w > 0 and s in pools]
    missing = [p for p in pools.values() if not p.exists]
    failed = [p for p in wanted if p.exists and p.copy_failed]
    down = [p for p in wanted if p.exists and p.copy_ready and p.ready_pods == 0 and not p.scaled_to_zero]
    idle = [p for p in wanted if p.exists and p.scaled_to_zero]
    placing = [p for p in wanted if p.exists and not p.copy_ready and not p.copy_failed]
    serving = ", ".join(f"{s} {w}%" for s, w in weights.items())
    problems: list[tuple[str, str]] = [(str(Reason.SERVER_NOT_FOUND), p.copy_message) for p in missing]
    if routed.status == ConditionStatus.FALSE:
        problems.append((routed.reason, routed.message))
    problems += [(str(Reason.LOAD_FAILED), f"server {p.server}: {p.copy_message}") for p in failed]
    problems += [
        (str(Reason.REPLICAS_NOT_READY), f"server {p.server} has no ready replica; its share goes elsewhere")
        for p in down
    ]
    waits: list[tuple[str, str]] = [
        (Reason.PLACING_COPIES, f"server {p.server}: {p.copy_message}") for p in placing
    ]
    waits += [
        (str(Reason.SCALED_TO_ZERO), f"server {p.server} is scaled to 0; its share goes elsewhere")
        for p in idle
    ]
    if routed.status == ConditionStatus.UNKNOWN:
        waits.append((Reason.WAITING_FOR_GATEWAY, routed.message))
    progressing: Said = outcome.progressing
    if problems:
        reason = problems[0][0]
        message = "; ".join(m for _, m in [*problems, *waits])
        ready: Said = (False, reason, message)
        degraded: Said = (True, reason, "; ".join(m for _, m in problems))
    else:
        degraded = (False, str(Reason.AS_EXPECTED), f"served through the Gateway: {serving}")
        if waits:
            ready = (False, waits[0][0], "; ".join(m for _, m in waits))
            if not progressing[0] and waits[0][0] != Reason.SCALED_TO_ZERO:
                progressing = (True, waits[0][0], ready[2])
        else:
            ready = outcome.ready or (True, "Serving", f"served through the Gateway: {serving}")
    if outcome.degraded is not None:
        degraded = outcome.degraded
        if ready[0] or not problems:
            ready = outcome.ready or (False, outcome.degraded[1], outcome.degraded[2])
    return [
        DecidedCondition.said(ModelConditionType.READY, *ready),
        DecidedCondition.said(ModelConditionType.PROGRESSING, *progressing),
        DecidedCondition.said(ModelConditionType.DEGRADED, *degraded),
        routed,
    ]


def split_stuck(pools: Mapping[str, Pool], desired: Mapping[str, int], outcome: TrafficOutcome) -> bool:
    """Whether only a change ends a split model's problem: a server it names does not exist, a copy it
    wants says Stalled, or its rollout across servers rolled back or was aborted."""
    wanted = [pools[s] for s, w in desired.items() if w > 0 and s in pools]
    return (
        outcome.stalled
        or any(not p.exists for p in pools.values())
        or any(p.exists and p.copy_failed and p.copy_stalled for p in wanted)
    )


def across_servers(outcome: TrafficOutcome, version: int) -> TrafficOutcome:
    """The engine's outcome keyed by pool, as status shows it: the rollout's servers, and the model
    version every pool serves."""
    rollout = outcome.rollout
    if rollout is not None:
        rollout = rollout | {
            "stableServer": rollout["stableVersion"],
            "canaryServer": rollout["canaryVersion"],
            "stableVersion": str(version),
            "canaryVersion": str(version),
        }
    traffic = [{**e, "server": e["version"], "version": str(version)} for e in outcome.traffic]
    return replace(outcome, rollout=rollout, traffic=traffic)


def same_spec(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the copy already has the spec (the apiserver adds defaults: compare what we set)."""
    return _subset(wanted, existing)


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, Mapping) and isinstance(big, Mapping):
        return all(k in big and _subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list) and isinstance(big, list):
        return len(small) == len(big) and all(_subset(a, b) for a, b in zip(small, big, strict=True))
    return bool(small == big)
