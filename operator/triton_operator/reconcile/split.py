"""A TritonModel served through a Gateway (spec.gateway), on one TritonServer or split across several.

The model is placed on each server as a TritonModel of its own, `<name>-on-<server>`, owned by it (so
everything a model does on one server, staging, loading on every replica, unloading on delete, is done
by the same code as for any model, and `kubectl get tritonmodels` shows each copy's state), and routed
by an HTTPRoute for its path (and a GRPCRoute for its host names) whose backends are the servers'
Services, weighted. A held experiment keeps spec.experiment.servers' weights; a changed spec.serverRef
under strategy Canary moves the traffic step by step, judged on each pool's own Triton counters by the
same engine as an in-server canary (reconcile/traffic.py), with the same status, Events and manual
commands; this module is the engine's Gateway traffic backend.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, cast

import kopf

from triton_operator.api.tritonmodel import ModelConditionType, TritonModelSpec
from triton_operator.conditions import DecidedCondition, set_conditions, with_kstatus
from triton_operator.kube.rest import Kube
from triton_operator.observe.pools import Pool, across_servers, same_spec, split_conditions, split_stuck
from triton_operator.observe.rollout import Counters, TrafficOutcome, pool_counters
from triton_operator.observe.server import pod_is_ready
from triton_operator.reconcile.gateway import OwnedRoutes, routed_condition
from triton_operator.reconcile.state import ModelMemory, OperatorState, RouteProblem, RoutingMemory
from triton_operator.reconcile.status import now, write_status
from triton_operator.reconcile.traffic import experiment_pass, read_state, spec_canary_pass
from triton_operator.render.labels import (
    SPLIT_OF_LABEL,
    SPLIT_SHARE_ANNOTATION,
    label_selector,
    name_label,
    route_labels,
)
from triton_operator.render.routes import Backend, model_route_names, model_routes
from triton_operator.render.split import copy_name, render_copy
from triton_operator.rollout.pools import placed_pools, serving_weights
from triton_operator.rollout.state import Decision, RolloutState
from triton_operator.rollout.traffic import Variant

log = logging.getLogger(__name__)
KIND = "TritonModel"
# After the route sends a retired pool nothing, its copy goes only once requests in flight are done.
DRAIN_S = 3.0
STATUS_FIELDS = ("observedGeneration", "conditions", "servedVersion", "endpoints", "rollout", "traffic")


class SplitReconciler:
    def __init__(self, kube: Kube, state: OperatorState):
        self.kube = kube
        self.state = state
        self.routes = OwnedRoutes(kube)

    def reconcile(
        self, body: Mapping[str, Any], spec: TritonModelSpec, memory: ModelMemory
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        public = spec.resolved_model_name(name)
        status: Mapping[str, Any] = body.get("status") or {}
        requested = spec.server_ref.name
        experiment = spec.pool_weights()
        state = None if experiment is not None else read_state(status, subject="server")
        placed = placed_pools(experiment, state, requested)
        memory.server = (namespace, requested)
        memory.pools = frozenset((namespace, pool) for pool in placed)

        copies = self._copies(namespace, name, meta["uid"])
        pools = {s: self._pool(namespace, s, copies.get(copy_name(name, s))) for s in placed}
        # While a canary across servers runs (or after it rolled back) its stable keeps serving what it did.
        frozen = state.stable_version if state is not None and state.stable_version != requested else None
        conflict = self._place(body, spec, public, pools, copies, frozen)

        routing = memory.routing
        counters = self._counters(namespace, placed, public)
        applied = routing.applied_at is not None
        if experiment is not None:
            variants = [Variant(server, server, weight) for server, weight in experiment.items()]
            routing.window, keyed = experiment_pass(
                variants, routing.window, applied, counters, time.monotonic(), describe="server"
            )
            desired = dict(experiment)
        else:
            decision, keyed = self._canary(body, spec, pools, routing, state, counters)
            desired = decision.weights
        outcome = across_servers(keyed, spec.version)
        weights = serving_weights(desired, {s: p.serving for s, p in pools.items()})
        self._mark_shares(namespace, name, copies, weights)
        backends = [Backend(s, weights.get(s, 0)) for s in placed if pools[s].exists]
        assert spec.gateway is not None
        routes = model_routes(name, namespace, public, spec.gateway, backends, route_labels(name))
        problem = conflict or self._apply_routes(body, routes, memory)
        kinds = [(r["kind"], r["metadata"]["name"]) for r in routes]
        verdict = self.routes.judge(body, problem, kinds, exposure=spec.gateway)
        routed = routed_condition(verdict)
        if verdict.ok and verdict.current:
            routing.applied_at = routing.applied_at or time.monotonic()
        else:
            routing.applied_at = None  # a step's window starts once the gateway has the weights
        return self._write(body, spec, public, pools, desired, weights, outcome, routed)

    # -- the copies ---------------------------------------------------------------------------------
    def withdraw(self, body: Mapping[str, Any]) -> None:
        """The model is no longer served through a Gateway: its copies and routes go. What the copies
        loaded their finalizers unload, but for what the model now loads itself (reconcile/leftovers.py)."""
        meta = body["metadata"]
        for copy in self._copies(meta["namespace"], meta["name"], meta["uid"]).values():
            if not copy["metadata"].get("deletionTimestamp"):
                log.info("removing %s: no Gateway serves %s any more", copy["metadata"]["name"], meta["name"])
                self.kube.delete("TritonModel", meta["namespace"], copy["metadata"]["name"])
        self.routes.apply(body, [], model_route_names(meta["name"]))

    def _copies(self, namespace: str, parent: str, uid: str) -> dict[str, dict[str, Any]]:
        """The TritonModels this model placed, by name (one with our label but not our uid is not ours)."""
        out = {}
        for copy in self.kube.list("TritonModel", namespace, f"{SPLIT_OF_LABEL}={name_label(parent)}"):
            refs = copy["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                out[copy["metadata"]["name"]] = copy
        return out

    def _pool(self, namespace: str, server: str, copy: Mapping[str, Any] | None) -> Pool:
        found = self.state.servers.get(
            (namespace, server), partial(self.kube.get, "TritonServer", namespace, server)
        )
        if found is None:
            missing = f"TritonServer {server} does not exist in namespace {namespace}: create it or remove it"
            return Pool(server, False, 0, False, missing)
        read = partial(self.kube.list, "Pod", namespace, label_selector(server))
        pods = self.state.server_pods.get((namespace, server), read)
        ready = sum(1 for p in pods if pod_is_ready(p) and not p["metadata"].get("deletionTimestamp"))
        scaled_to_zero = int((found.get("spec") or {}).get("replicas", 1)) == 0
        if scaled_to_zero:
            ready = 0  # its pods are about to go: take its share away before they do
        if copy is None:
            return Pool(
                server, True, ready, False, f"its copy on {server} is being created", False, scaled_to_zero
            )
        copy_status = copy.get("status") or {}
        current = copy_status.get("observedGeneration") == copy["metadata"].get("generation")
        conditions = {c.get("type"): c for c in copy_status.get("conditions") or []}
        cond = conditions.get(ModelConditionType.READY) or {}
        copy_ready = current and cond.get("status") == "True"
        failed = current and (conditions.get(ModelConditionType.DEGRADED) or {}).get("status") == "True"
        stalled = current and (conditions.get(ModelConditionType.STALLED) or {}).get("status") == "True"
        said = cond.get("message") or "not reported yet"
        message = f"its copy {copy['metadata']['name']} is not Ready: {said}"
        text = "" if copy_ready else message
        return Pool(server, True, ready, copy_ready, text, failed, scaled_to_zero, stalled)

    def _place(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        public: str,
        pools: Mapping[str, Pool],
        copies: Mapping[str, Mapping[str, Any]],
        frozen: str | None,
    ) -> RouteProblem | None:
        """Apply a copy on every placed server that exists (but leave the `frozen` pool's copy as it is);
        delete copies on servers no longer placed."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        wanted = {copy_name(name, server): server for server, pool in pools.items() if pool.exists}
        for copy, server in wanted.items():
            manifest = render_copy(name, namespace, server, spec, public)
            existing = copies.get(copy)
            if existing is not None and same_spec(existing.get("spec") or {}, manifest["spec"]):
                continue
            if existing is not None and frozen == server:
                continue  # the stable of a canary across servers keeps what it serves until it is retired
            if existing is None and self.kube.get("TritonModel", namespace, copy) is not None:
                return RouteProblem(
                    "CopyConflict",
                    f"a TritonModel named {copy} already exists and is not this model's copy: delete or "
                    "rename it (the operator never changes objects it does not own)",
                )
            kopf.adopt(manifest, owner=cast(kopf.Body, body))
            log.info("placing %s/%s on TritonServer %s as %s", namespace, name, server, copy)
            self.kube.apply(manifest)
        for copy in set(copies) - set(wanted):
            if not copies[copy]["metadata"].get("deletionTimestamp"):
                log.info("removing %s/%s (its server no longer holds %s)", namespace, copy, name)
                self.kube.delete("TritonModel", namespace, copy)
        return None

    def _mark_shares(
        self, namespace: str, parent: str, copies: Mapping[str, Mapping[str, Any]], weights: Mapping[str, int]
    ) -> None:
        """Each copy says its pool's share of the traffic (an annotation kubectl get shows as SHARE), so a
        copy at rest reads as a pool at its weight, not as a canary. A merge patch of the annotation
        alone: a frozen copy's spec stays as it is, and the copy's own apply does not own the field."""
        for server, share in weights.items():
            copy = copies.get(copy_name(parent, server))
            if copy is None or copy["metadata"].get("deletionTimestamp"):
                continue  # a copy created this pass is marked on the next
            if (copy["metadata"].get("annotations") or {}).get(SPLIT_SHARE_ANNOTATION) == str(share):
                continue
            patch = {"metadata": {"annotations": {SPLIT_SHARE_ANNOTATION: str(share)}}}
            self.kube.merge_patch("TritonModel", namespace, copy["metadata"]["name"], patch)

    def _apply_routes(
        self, body: Mapping[str, Any], routes: Sequence[Mapping[str, Any]], memory: ModelMemory
    ) -> RouteProblem | None:
        """Apply the routes when they change (a weight change is one apply); remember what is there."""
        rendered = json.dumps(routes, sort_keys=True)
        if memory.routes_applied == rendered and memory.route_problem is None:
            return None
        problem = self.routes.apply(body, routes, model_route_names(body["metadata"]["name"]))
        memory.route_problem = problem
        if problem is None:
            if memory.routes_applied != rendered:
                memory.routing.applied_at = None
                log.info("routes of %s: %s", body["metadata"]["name"], _weights_text(routes))
            memory.routes_applied = rendered
        return problem

    # -- decisions ----------------------------------------------------------------------------------
    def _counters(self, namespace: str, pools: Sequence[str], public: str) -> Counters:
        """Each pool's figures for the model, from the server reconcilers' last scrapes."""
        scrapes = {pool: dict(self.state.scrapes.get((namespace, pool)) or {}) for pool in pools}
        return pool_counters(scrapes, public)

    @staticmethod
    def _canary(
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        pools: Mapping[str, Pool],
        routing: RoutingMemory,
        state: RolloutState | None,
        counters: Counters,
    ) -> tuple[Decision, TrafficOutcome]:
        """The engine's pass across servers: the pool spec.serverRef names is the canary."""
        retired = None
        old = state.promoted_over if state is not None else None
        applied = routing.applied_at
        if old is not None and applied is not None and time.monotonic() - applied >= DRAIN_S:
            # The gateway sends the old pool nothing and requests in flight had time to finish: the
            # rollout settles, and the next pass no longer places the old pool's copy.
            retired = f"the copy on server {old} is removed"
        pool = pools[spec.server_ref.name]
        return spec_canary_pass(
            spec,
            body["metadata"].get("annotations"),
            routing,
            counters,
            state,
            subject="server",
            requested=spec.server_ref.name,
            ready=pool.serving,
            waiting_for=pool.copy_message or "no ready replica",
            retired=retired,
        )

    # -- status ---------------------------------------------------------------------------------------
    def _write(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        public: str,
        pools: Mapping[str, Pool],
        desired: Mapping[str, int],
        weights: Mapping[str, int],
        outcome: TrafficOutcome,
        routed: DecidedCondition,
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        generation = int(meta.get("generation", 1))
        old = body.get("status") or {}
        decided = with_kstatus(
            split_conditions(pools, desired, weights, outcome, routed), split_stuck(pools, desired, outcome)
        )
        conditions = set_conditions(old.get("conditions") or [], decided, generation, now())
        traffic = []
        for entry in outcome.traffic:
            server = entry.get("server")
            traffic.append({**entry, "desiredWeight": weights.get(str(server), 0)})
        new: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": conditions,
            "endpoints": {"model": f"/v2/models/{public}/infer"},
            "traffic": traffic,
        }
        if outcome.rollout is not None:
            new["rollout"] = outcome.rollout
        if any(p.serving for p in pools.values()):
            new["servedVersion"] = spec.version
        return write_status(self.kube, KIND, body, new, STATUS_FIELDS)


def _weights_text(routes: Sequence[Mapping[str, Any]]) -> str:
    rule = (routes[0].get("spec") or {}).get("rules", [{}])[0] if routes else {}
    return ", ".join(f"{b['name']} {b.get('weight', 1)}" for b in rule.get("backendRefs", []))
