"""The story a status write tells, as Events: one per action taken or problem found, with the numbers.

Pure: `story(kind, old_status, new_status, spec)` reads only the status fields users read (conditions,
loaded, replicas, pods, stagedDigest, stagingJob, servedVersion, rollout) and says what changed between
two writes: staging started and finished (with the digest), loaded on N/N replicas, a canary's start,
steps and outcome (with the rollout machine's own sentence and figures), a server rolling out, rolled
out, scaled, ready; a route accepted or refused; and problems, once each, as Warnings. A condition that
merely stayed or turned healthy says nothing (Reconciling and Stalled restate the others for kstatus, and
"Degraded is False" is no news). Whether an Event is a Warning is its reason's own severity
(conditions.Reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from triton_operator.api.autoscaling import wanted_replicas
from triton_operator.conditions import Reason, is_progress, is_warning
from triton_operator.kube.events import NORMAL, WARNING, Event

Status = Mapping[str, Any]

# Conditions whose "bad" status makes a transition to it a problem (a Warning Event).
_BAD = {
    "Ready": "False",
    "Available": "False",
    "Degraded": "True",
    "Staged": "False",
    "Loaded": "False",
    "Routed": "False",
}


def is_problem(cond: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a condition's new status is a problem (a Warning Event) rather than normal progress.

    Not Ready for the very reason it is Progressing (a rollout's step), or not Available while
    Progressing, and not Degraded, is progress, not a problem: Warning Events are for what someone
    should look at.
    """
    if _BAD.get(str(cond.get("type"))) != cond.get("status"):
        return False
    if is_progress(str(cond.get("reason"))):
        return False
    if cond.get("type") not in ("Ready", "Available"):
        return True
    state = {c.get("type"): c for c in conditions}
    progressing, degraded = state.get("Progressing") or {}, state.get("Degraded") or {}
    rolling = progressing.get("status") == "True"
    # Not Available while rolling out (a fresh server's first seconds) is progress too; once rolled out,
    # losing every replica is an outage and warns.
    in_progress = rolling and (
        cond.get("type") == "Available" or progressing.get("reason") == cond.get("reason")
    )
    return not (in_progress and degraded.get("status") != "True")


# Conditions that only restate others for kstatus (Flux): a flip of theirs is no Event of its own (the
# Degraded, Ready or Progressing flip that caused it has one, with the same reason).
NO_EVENTS = frozenset({"Reconciling", "Stalled"})


def transitions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed (or that are new)."""
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in old}
    return [c for c in new if before.get(c.get("type")) != (c.get("status"), c.get("reason"))]


# Rollout decisions that are an action taken (an Event); the others (waiting for metrics, an analysis
# that passed or was inconclusive and changed nothing, serving, a canary loading) are the status's
# running commentary.
ROLLOUT_ACTIONS = frozenset(
    {
        Reason.CANARY_STARTED,
        Reason.CANARY_REPLACED,
        Reason.CANARY_WITHDRAWN,
        Reason.STEP_ADVANCED,
        Reason.PROMOTED,
        Reason.PROMOTED_BY_COMMAND,
        Reason.ROLLED_BACK,
        Reason.ABORTED_BY_COMMAND,
        Reason.RETRIED,
        Reason.COMMAND_IGNORED,
        Reason.ROLLED_OUT_IMMEDIATELY,
        Reason.EXPERIMENT_RUNNING,
    }
)


def event(reason: str, message: str, problem: bool = False) -> Event:
    """An Event whose type is its reason's severity (`problem` for a reason outside the vocabulary)."""
    return Event(WARNING if is_warning(reason, problem) else NORMAL, reason, message)


def _conditions(status: Status) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in status.get("conditions") or []}


def _flipped(old: Status, new: Status, ctype: str) -> Mapping[str, Any] | None:
    """The new condition `ctype` when its status or reason changed (or it is new), else None."""
    before, after = _conditions(old).get(ctype), _conditions(new).get(ctype)
    if after is None:
        return None
    if before is not None and (before.get("status"), before.get("reason")) == (
        after.get("status"),
        after.get("reason"),
    ):
        return None
    return after


def _turned(old: Status, new: Status, ctype: str, status: str) -> Mapping[str, Any] | None:
    """The new condition `ctype` when it turned to `status` (it was another status, or absent)."""
    after = _conditions(new).get(ctype)
    before = _conditions(old).get(ctype)
    if after is None or after.get("status") != status:
        return None
    if before is not None and before.get("status") == status:
        return None
    return after


def _sentence(text: Any) -> str:
    out = str(text or "").strip()
    out = out[:1].upper() + out[1:]
    return out if out.endswith((".", "!", "?")) else f"{out}."


def problems(old: Status, new: Status, ignore: frozenset[str] = frozenset()) -> list[Event]:
    """A Warning per problem that appeared (a condition turned bad, or bad for a new reason), one per
    reason, in Degraded's words when Degraded says it (it lists every problem)."""
    new_conditions = list(new.get("conditions") or [])
    by_type = _conditions(new)
    out: list[Event] = []
    seen: set[str] = set()
    for cond in transitions(old.get("conditions") or [], new_conditions):
        if cond.get("type") in NO_EVENTS or not is_problem(cond, new_conditions):
            continue
        reason = str(cond.get("reason"))
        if reason in seen or reason in ignore:
            continue
        seen.add(reason)
        degraded = by_type.get("Degraded") or {}
        said = degraded if degraded.get("reason") == reason and degraded.get("status") == "True" else cond
        out.append(event(reason, _sentence(said.get("message")), problem=True))
    return out


# --- TritonServer ------------------------------------------------------------------------------------


def _names(status: Status, ready: bool | None = None) -> set[str]:
    return {
        str(p.get("name")) for p in status.get("pods") or [] if ready is None or bool(p.get("ready")) == ready
    }


def _starting_pods_explain(old: Status, new: Status, spec: Mapping[str, Any]) -> bool:
    """Whether replicas not ready are new pods starting (a scale-up: more wanted than there were, or pods
    that were not there before) rather than pods that served and stopped (killed, crashed). The pod
    list may lag the Deployment's counts by a pass: a lost pod can still read ready, so a problem is
    assumed unless new pods explain it."""
    lost = _names(old, ready=True) & _names(new, ready=False)
    if lost:
        return False
    wanted, had = wanted_replicas(spec, new), old.get("replicas")
    scaling_up = isinstance(wanted, int) and isinstance(had, int) and wanted > had
    return scaling_up or bool(_names(new) - _names(old))


def server_story(old: Status, new: Status, spec: Mapping[str, Any]) -> list[Event]:
    out: list[Event] = []
    ready_before = _conditions(old).get("Ready") or {}
    ready = _conditions(new).get("Ready") or {}
    wanted = wanted_replicas(spec, new)
    had = old.get("replicas")
    scaled = (
        isinstance(wanted, int)
        and isinstance(had, int)
        and ready_before.get("status") == "True"
        and wanted != had
        and (ready.get("status"), ready.get("message")) != ("True", ready_before.get("message"))
        and (_conditions(new).get("Progressing") or {}).get("status") != "True"
    )
    if scaled:
        out.append(event(Reason.SCALED, f"Scaling from {had} to {wanted} replicas."))
    rolling = _flipped(old, new, "Progressing")
    if (
        rolling is not None
        and rolling.get("status") == "True"
        and rolling.get("reason") == Reason.ROLLING_OUT
    ):
        out.append(event(Reason.ROLLING_OUT, _sentence(rolling.get("message"))))
    done = rolling is not None and rolling.get("reason") == Reason.ROLLOUT_COMPLETE and bool(_conditions(old))
    now_ready = _turned(old, new, "Ready", "True")
    if now_ready is not None:
        prefix = f"{_sentence(rolling.get('message'))[:-1]}: " if done and rolling is not None else ""
        text = _sentence(now_ready.get("message"))
        out.append(
            event(str(now_ready.get("reason")), prefix + (text[:1].lower() + text[1:] if prefix else text))
        )
    elif done and rolling is not None:
        out.append(event(Reason.ROLLOUT_COMPLETE, _sentence(rolling.get("message"))))
    out.extend(_routed(old, new))
    starting = _starting_pods_explain(old, new, spec)
    ignore = frozenset({Reason.REPLICAS_NOT_READY}) if starting else frozenset()
    said = {e.reason for e in out}
    out.extend(e for e in problems(old, new, ignore) if e.reason not in said)
    return out


# --- TritonModel -------------------------------------------------------------------------------------


def _rollout_key(rollout: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(rollout.get(k) for k in ("phase", "reason", "stepIndex", "canaryVersion", "canaryServer"))


def _rollout_events(old: Status, new: Status) -> list[Event]:
    before: Mapping[str, Any] = old.get("rollout") or {}
    after: Mapping[str, Any] = new.get("rollout") or {}
    reason = after.get("reason")
    if not after or reason not in ROLLOUT_ACTIONS or _rollout_key(before) == _rollout_key(after):
        return []
    # The machine's own sentence: the step and weight reached, the verdict's figures.
    return [event(str(reason), _sentence(after.get("message") or reason))]


def _completed(old: Status, new: Status, told: Sequence[Event]) -> list[Event]:
    """A rollout that completed (Progressing turned False, RolloutComplete): what serves now."""
    progressing = _flipped(old, new, "Progressing")
    if (
        progressing is None
        or progressing.get("reason") != Reason.ROLLOUT_COMPLETE
        or (_conditions(old).get("Progressing") or {}).get("status") != "True"
    ):
        return []
    message = _sentence(progressing.get("message"))
    if any(e.message == message for e in told):  # the promotion said it in these words already
        rollout: Mapping[str, Any] = new.get("rollout") or {}
        server = rollout.get("canaryServer")  # the canary took over (stable moves to it next)
        what = f"server {server}" if server else f"version {rollout.get('canaryVersion')}"
        message = f"Rollout complete: {what} serves all the traffic."
    return [event(Reason.ROLLOUT_COMPLETE, message)]


def _routed(old: Status, new: Status) -> list[Event]:
    routed = _flipped(old, new, "Routed")
    if routed is not None and routed.get("status") == "True":
        return [event(str(routed.get("reason")), _sentence(routed.get("message")))]
    return []  # refused: a problem (problems() says it)


def model_story(old: Status, new: Status, spec: Mapping[str, Any]) -> list[Event]:
    out: list[Event] = []
    conditions, before = _conditions(new), _conditions(old)
    staged = conditions.get("Staged") or {}
    staging = _flipped(old, new, "Staged")
    if (
        staging is not None
        and staging.get("reason") == Reason.STAGING
        and "Job" in str(staging.get("message"))
    ):
        out.append(event(Reason.STAGING, _sentence(staging.get("message"))))
    digest = new.get("stagedDigest")
    if digest and digest != old.get("stagedDigest"):
        what = _sentence(staged.get("message")) if staged.get("status") == "True" else "Files staged."
        out.append(event(Reason.STAGED, f"{what[:-1]}, digest {digest}."))
    loaded, loaded_before = conditions.get("Loaded") or {}, before.get("Loaded") or {}
    if loaded.get("status") == "True" and (
        loaded_before.get("status") != "True" or loaded_before.get("message") != loaded.get("message")
    ):
        out.append(event(Reason.LOADED, _sentence(loaded.get("message"))))
    out.extend(_rollout_events(old, new))
    out.extend(_completed(old, new, out))
    out.extend(_routed(old, new))
    said = {e.reason for e in out}
    out.extend(e for e in problems(old, new) if e.reason not in said)
    return out


def story(kind: str, old: Status, new: Status, spec: Mapping[str, Any]) -> list[Event]:
    """The Events that writing `new` over `old` tells, in order (actions first, then problems)."""
    if kind == "TritonServer":
        return server_story(old, new, spec)
    return model_story(old, new, spec)


def deletion_story(kind: str, unloaded: Sequence[str]) -> list[Event]:
    """What deleting an object did: a model unloaded from its replicas (a server's children go by
    Kubernetes' garbage collection: nothing of the operator's to tell)."""
    if kind != "TritonModel":
        return []
    pods = f": {', '.join(unloaded)}" if unloaded else " (none reachable)"
    return [event(Reason.UNLOADED, f"Unloaded from {len(unloaded)} replicas{pods}.")]
