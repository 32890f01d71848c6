"""The in-server router of a routed model (canary rollout or A/B experiment): its weights on every
replica, and how its rollout shows in the model's conditions.

The rollout itself is decided by the one engine (reconcile/traffic.py over rollout/machine.py); this
module is its in-server traffic backend: it loads the router with the decided weights on each ready pod
whose Triton has the weighted versions READY, and says when they are in place everywhere (a step's
window starts then). Order of operations, measured on real Triton: a version gets traffic only once it
is READY on every replica; after a promotion the router sends everything to the new version first, and
only then is the old version's folder removed and the versions model reloaded (which unloads it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from triton_operator.api.common import ConditionStatus
from triton_operator.api.tritonmodel import ModelConditionType, TritonModelSpec
from triton_operator.conditions import DecidedCondition, with_kstatus
from triton_operator.observe.model import ObservedModel, model_conditions, model_stuck
from triton_operator.observe.rollout import WindowStart
from triton_operator.observe.server import triton_is_up
from triton_operator.reconcile.traffic import TrafficOutcome
from triton_operator.render.router import Variant as RouterVariant
from triton_operator.render.router import router_config, router_files, router_matches
from triton_operator.rollout.state import RolloutState, describe_weights
from triton_operator.triton import client as triton
from triton_operator.triton.client import ModelState

log = logging.getLogger(__name__)
ROUTER_LOADING = "RouterLoading"


@dataclass
class RoutingMemory:
    """What one routed model's passes remember (rebuilt after a restart: routers are loaded again)."""

    # Pod uid -> the router config (variants, sticky key) loaded there.
    routers: dict[str, tuple[tuple[RouterVariant, ...], str]] = field(default_factory=dict)
    # Where the current window of traffic (a canary step, an experiment's weights) starts.
    window: WindowStart | None = None
    # When the current weights were in place on every replica (time.monotonic()); None while applying.
    applied_at: float | None = None
    # Pod uids where a router of this model is loaded, whatever its weights: clients reach it there (a
    # reload with new weights swaps it in place; a versions reload leaves it loaded).
    serving: set[str] = field(default_factory=set)
    # Whether every ready replica has one (the model is not Ready before; RouterLoading).
    on_every_pod: bool = False
    # (pod uid, staging Job) where a version no longer served was found loaded and a reload was asked
    # (once: a reload that keeps it means its files are still there, and the next retire removes them).
    stale_reloads: set[tuple[str, str]] = field(default_factory=set)


def read_state(status: Mapping[str, Any]) -> RolloutState | None:
    try:
        return RolloutState.from_status(status["rollout"]) if status.get("rollout") else None
    except ValueError as exc:
        log.warning("ignoring an unreadable status.rollout: %s", exc)
        return None


def ready_versions(index: Sequence[ModelState], target: str) -> set[str]:
    return {row.version for row in index if row.name == target and row.state == "READY" and row.version}


class Router:
    """Puts a routed model's router, with its weights, on every replica."""

    def __init__(self, read_index: Callable[[Mapping[str, Any]], list[ModelState]]):
        self.read_index = read_index

    @staticmethod
    def _serves_already(
        endpoint: triton.TritonEndpoint,
        public: str,
        target: str,
        wanted: tuple[tuple[RouterVariant, ...], str],
    ) -> bool:
        """Whether the pod's Triton serves this router already, as its config API says (a pod this
        process has not loaded a router on: after a restart, the router a predecessor loaded)."""
        variants, sticky_key = wanted
        try:
            loaded = triton.model_config(endpoint, public)
            config = router_config(
                public, triton.model_config(endpoint, target), variants, sticky_key=sticky_key
            )
        except (triton.TritonError, ValueError):
            return False  # not loaded, or not a router we could load: the load says why
        return router_matches(loaded, config)

    def apply_router(
        self,
        pods: Sequence[Mapping[str, Any]],
        public: str,
        target: str,
        weights: Mapping[str, int],
        sticky_key: str,
        memory: RoutingMemory,
        stopped: Callable[[], bool],
    ) -> list[str]:
        """Load the router with `weights` on every ready pod that serves their versions; problems found."""
        variants = tuple(
            RouterVariant(target, int(v), w) for v, w in sorted(weights.items(), key=lambda i: int(i[0]))
        )
        wanted = (variants, sticky_key)
        problems = []
        everywhere = True
        up = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or not triton_is_up(pod):
                continue
            up.add(uid)
            if memory.routers.get(uid) == wanted:
                memory.serving.add(uid)
                continue
            endpoint = triton.TritonEndpoint(ip)
            if uid not in memory.routers and self._serves_already(endpoint, public, target, wanted):
                memory.routers[uid] = wanted  # loaded before this operator (re)started: no reload
                memory.serving.add(uid)
                continue
            everywhere = False
            if stopped():
                continue
            needed = {v for v, w in weights.items() if w > 0}
            missing = needed - ready_versions(self.read_index(pod), target)
            if missing:
                continue  # the versions load first (this pass or the next)
            try:
                config = router_config(
                    public, triton.model_config(endpoint, target), variants, sticky_key=sticky_key
                )
                triton.load_model(endpoint, public, config_json=json.dumps(config), files=router_files())
            except (triton.TritonError, ValueError) as exc:
                message = exc.message if isinstance(exc, triton.TritonError) else str(exc)
                problems.append(f"router on pod {pod['metadata']['name']}: {message}")
                continue
            memory.routers[uid] = wanted
            memory.serving.add(uid)
            log.info(
                "router %s on pod %s: %s",
                public,
                pod["metadata"]["name"],
                describe_weights(weights, "version"),
            )
        live = {p["metadata"]["uid"] for p in pods}
        for uid in set(memory.routers) - live:
            del memory.routers[uid]
        memory.serving &= live
        memory.on_every_pod = up <= memory.serving
        if everywhere:
            memory.applied_at = memory.applied_at or time.monotonic()
        else:
            memory.applied_at = None
        return problems


def routed_conditions(decided: Sequence[DecidedCondition], routed: TrafficOutcome) -> list[DecidedCondition]:
    """A routed model's conditions: its own (staging, loading), then what the rollout says on top.

    Ready is False while a rollout runs or after a rollback (`kubectl wait --for=condition=Ready`
    returns once the spec's version serves everything); Progressing says where the rollout is.
    """

    def condition(ctype: str, decided_by: tuple[bool, str, str]) -> DecidedCondition:
        ok, reason, message = decided_by
        return DecidedCondition(ctype, ConditionStatus.TRUE if ok else ConditionStatus.FALSE, reason, message)

    out = []
    for cond in decided:
        if cond.type == ModelConditionType.READY and routed.ready is not None and cond.status == "True":
            cond = condition(cond.type, routed.ready)
        elif cond.type == ModelConditionType.DEGRADED and routed.degraded is not None:
            cond = condition(cond.type, routed.degraded)
        out.append(cond)
    out.append(condition(ModelConditionType.PROGRESSING, routed.progressing))
    return out


def model_status_conditions(
    observed: ObservedModel, routed: TrafficOutcome | None = None
) -> list[DecidedCondition]:
    """Every condition a TritonModel (not through a Gateway) writes: its own from the observed facts, a
    routed model's rollout on top, and Reconciling and Stalled for kstatus (Flux) from both."""
    decided = model_conditions(observed)
    stuck = model_stuck(observed)
    if routed is not None:
        decided = routed_conditions(decided, routed)
        stuck = stuck or routed.stalled
    return with_kstatus(decided, stuck)


def variant_specs(spec: TritonModelSpec) -> list[TritonModelSpec]:
    """The spec of each experiment variant other than spec.version: its version from its own source."""
    if spec.experiment is None:
        return []
    return [
        spec.model_copy(update={"version": v.version, "source": v.source})
        for v in spec.experiment.version_variants
        if v.version != spec.version and v.source is not None
    ]


def router_everywhere(outcome: TrafficOutcome, memory: RoutingMemory, public: str) -> TrafficOutcome:
    """Clients reach a routed model only through its router: not Ready before one is on every ready
    replica. A router being reloaded with new weights still serves (Triton swaps it in place), so a
    weight change alone never makes the model unready."""
    if memory.on_every_pod or outcome.ready is not None:
        return outcome
    message = f"the router serving {public} is not on every ready replica yet (its versions load first)"
    return replace(outcome, ready=(False, ROUTER_LOADING, message))
