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
from dataclasses import replace
from typing import Any

from triton_operator.api.tritonmodel import ReplicaState, TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import Reason
from triton_operator.observe.model import (
    ReplicaFacts,
    ready_versions,
)
from triton_operator.observe.rollout import TrafficOutcome, target_counters
from triton_operator.observe.server import triton_is_up
from triton_operator.reconcile.files import RepositoryFiles
from triton_operator.reconcile.loading import Loader
from triton_operator.reconcile.state import ModelMemory, OperatorState, RoutingMemory
from triton_operator.reconcile.traffic import experiment_pass, read_state, spec_canary_pass, with_problem
from triton_operator.render.router import Variant as RouterVariant
from triton_operator.render.router import router_config, router_files, router_matches
from triton_operator.render.staging import staging_job_name
from triton_operator.rollout.state import Action, Decision, describe_weights
from triton_operator.rollout.traffic import Variant as ExperimentVariant
from triton_operator.triton import client as triton

log = logging.getLogger(__name__)


class InServerTraffic:
    """The engine's in-server traffic backend: a routed model's weights decided by the one rollout
    engine (reconcile/traffic.py), put in the router on every replica, and what a decision asks beyond
    them (retiring a promoted-over version, files nothing serves)."""

    def __init__(self, state: OperatorState, files: RepositoryFiles, loader: Loader):
        self.state = state
        self.files = files
        self.loader = loader

    def route(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        memory: ModelMemory,
        pods: list[dict[str, Any]],
        replicas: list[ReplicaFacts],
        stopped: Callable[[], bool],
    ) -> TrafficOutcome:
        """Decide the weights (the one rollout engine), put them in the router on every live replica
        (`pods`, with their `replicas` facts, as loading left them), and retire a promoted-over version
        once nothing routes to it."""
        meta = body["metadata"]
        name = meta["name"]
        public, target = spec.resolved_model_name(name), spec.repository_name(name)
        routing = memory.routing
        scrapes = dict(self.state.scrapes.get(memory.server) or {}) if memory.server else {}
        counters = target_counters(scrapes, target, public)
        decision: Decision | None = None
        if spec.experiment is not None:
            variants = [
                ExperimentVariant(f"v{v.version}", str(v.version), v.weight)
                for v in spec.experiment.version_variants
            ]
            applied = routing.applied_at is not None
            routing.window, outcome = experiment_pass(
                variants, routing.window, applied, counters, time.monotonic()
            )
            weights = {v.version: v.weight for v in variants}
            sticky = spec.experiment.sticky_key or ""
        else:
            state = read_state(body.get("status") or {})
            old = state.promoted_over if state is not None else None
            retired = f"version {old} unloaded" if old is not None and memory.retired == int(old) else None
            decision, outcome = spec_canary_pass(
                spec,
                meta.get("annotations"),
                routing,
                counters,
                state,
                subject="version",
                requested=str(spec.version),
                ready=self._ready_everywhere(name, spec, server_spec, memory, replicas),
                waiting_for="its files are staging or loading",
                retired=retired,
            )
            weights = decision.weights
            sticky = spec.effective_rollout().sticky_key or ""
        problems = self.apply_router(pods, public, target, weights, sticky, routing, stopped)
        if problems:
            outcome = with_problem(outcome, str(Reason.LOAD_FAILED), "; ".join(problems))
        if decision is not None:
            self._after_decision(body, spec, server_spec, decision, pods, memory)
        return router_everywhere(outcome, routing, public)

    @staticmethod
    def _ready_everywhere(
        name: str,
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        memory: ModelMemory,
        replicas: list[ReplicaFacts],
    ) -> bool:
        """Whether the spec's version is READY on every ready replica (a new version gets no traffic before).

        The facts are about the files staged last: only once those are the spec's version do they say
        whether that version is READY everywhere (while it stages, they still describe the old one).
        """
        ready = [r for r in replicas if r.pod_ready]
        loaded = [r for r in ready if r.state == ReplicaState.READY and r.current]
        return (
            memory.has_staged(staging_job_name(name, spec))
            and bool(ready)
            and len(loaded) == len(ready)
            and len(loaded) >= server_spec.fewest_replicas()
        )

    def _after_decision(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        decision: Decision,
        pods: list[dict[str, Any]],
        memory: ModelMemory,
    ) -> None:
        """What a canary's decision asks beyond the router's weights: retire a promotion's old version
        once the router sends it nothing on every replica (the next pass sees it gone and settles);
        once one version serves everything, nothing else stays loaded or on disk."""
        if decision.action is Action.SETTLE:
            memory.retired = None  # done with; a later promotion over the same version retires it again
        if decision.retire is not None:
            if memory.routing.applied_at is not None:
                self.files.retire(body, spec, server_spec, int(decision.retire), memory)
            return
        served = decision.state.canary_version
        if decision.state.stable_version != served:
            return
        target = spec.repository_name(body["metadata"]["name"])
        on_disk = self.loader.reload_stale_versions(pods, target, served, memory)
        staged_now = memory.has_staged(staging_job_name(body["metadata"]["name"], spec))
        if staged_now and str(spec.version) == served:
            # Files no spec asks for (left in a retained repository by a model deleted while its
            # server was gone, say): the one version serving everything is all there should be.
            for version in sorted(on_disk - {str(spec.version)}):
                self.files.retire(body, spec, server_spec, int(version), memory)

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
            missing = needed - ready_versions(self.state.pod_index(pod), target)
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


def router_everywhere(outcome: TrafficOutcome, memory: RoutingMemory, public: str) -> TrafficOutcome:
    """Clients reach a routed model only through its router: not Ready before one is on every ready
    replica. A router being reloaded with new weights still serves (Triton swaps it in place), so a
    weight change alone never makes the model unready."""
    if memory.on_every_pod or outcome.ready is not None:
        return outcome
    message = f"the router serving {public} is not on every ready replica yet (its versions load first)"
    return replace(outcome, ready=(False, Reason.ROUTER_LOADING, message))
