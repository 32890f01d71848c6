"""The Gateway API routes of an object exposed through a Gateway: apply the ones it owns, remove the ones
it no longer wants, and turn what the gateway wrote in their status into the object's Routed condition.

Only routes carrying an owner reference to the object are ever changed or deleted: a route of the same
name made by someone else (or by GitOps) is reported as a conflict and left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from triton_operator.api.common import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    ConditionStatus,
    ConditionType,
)
from triton_operator.api.gateway import GatewayExposure
from triton_operator.conditions import DecidedCondition
from triton_operator.kube.rest import Kube, api_message
from triton_operator.reconcile.state import RouteProblem
from triton_operator.render.labels import MANAGED_BY, ROUTE_COMPONENT
from triton_operator.render.routes import RouteVerdict, route_verdict, routes_verdict, weight_to

log = logging.getLogger(__name__)


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid for ref in refs)


def problem_of(exc: ApiException, kind: str) -> RouteProblem:
    """An apply that failed, as the Routed condition says it: what is wrong and what to do."""
    if exc.status == 404:
        return RouteProblem(
            "GatewayAPIMissing",
            f"the Gateway API CRDs are not installed ({kind} gateway.networking.k8s.io/v1 is unknown to the "
            "apiserver): install Gateway API v1.1 or newer (standard channel), or remove spec.gateway",
        )
    if exc.status == 403:
        return RouteProblem(
            "Forbidden",
            f"the operator may not write {kind}s here ({api_message(exc)}): grant its ServiceAccount "
            "httproutes and grpcroutes in gateway.networking.k8s.io (the chart's RBAC does)",
        )
    return RouteProblem("RouteApplyFailed", f"applying the {kind} failed: {exc.status} {api_message(exc)}")


def routes_sending_to(kube: Kube, namespace: str, service: str) -> list[str]:
    """The operator's model routes (a model split across servers) that still give `service` a share."""
    selector = f"{LABEL_COMPONENT}={ROUTE_COMPONENT},{LABEL_MANAGED_BY}={MANAGED_BY}"
    found = []
    for kind in ("HTTPRoute", "GRPCRoute"):
        try:
            routes = kube.list(kind, namespace, selector)
        except ApiException:
            return []  # no Gateway API here: no route sends anything
        for route in routes:
            owners = (route["metadata"].get("ownerReferences") or [{}])[0].get("kind")
            if owners == "TritonModel" and weight_to(route, service) > 0:
                found.append(f"{kind} {route['metadata']['name']}")
    return found


class OwnedRoutes:
    def __init__(self, kube: Kube):
        self.kube = kube

    def apply(
        self,
        owner: Mapping[str, Any],
        routes: Sequence[Mapping[str, Any]],
        possible: Sequence[tuple[str, str]],
    ) -> RouteProblem | None:
        """Apply `routes` (owned by `owner`); delete the owner's `possible` (kind, name) routes that are
        not wanted any more (a GRPCRoute when hostnames went away, both when spec.gateway did)."""
        meta = owner["metadata"]
        namespace, uid = meta["namespace"], meta["uid"]
        wanted = {(r["kind"], r["metadata"]["name"]) for r in routes}
        candidates = set(possible) | wanted
        try:
            for route in routes:
                kind, name = route["kind"], route["metadata"]["name"]
                existing = self.kube.get(kind, namespace, name)
                if existing is not None and not owned_by(existing, uid):
                    return RouteProblem(
                        "RouteConflict",
                        f"a {kind} named {name} already exists and is not this object's: the operator never "
                        "changes routes it does not own; delete or rename that route",
                    )
                manifest = dict(route)
                kopf.adopt(manifest, owner=cast(kopf.Body, owner))
                self.kube.apply(manifest)
            for kind, name in sorted(candidates - wanted):
                existing = self.kube.get(kind, namespace, name)
                if existing is not None and owned_by(existing, uid):
                    log.info("removing %s %s/%s (no longer wanted)", kind, namespace, name)
                    self.kube.delete(kind, namespace, name)
        except ApiException as exc:
            if exc.status == 404 and not routes:
                return None  # no Gateway API at all, and no routes wanted: nothing to remove either
            return problem_of(exc, "route")
        return None

    def verdict(self, namespace: str, routes: Sequence[tuple[str, str]]) -> RouteVerdict:
        """What the gateway said of each (kind, name) route, as one verdict."""
        verdicts = []
        for kind, name in routes:
            try:
                route = self.kube.get(kind, namespace, name)
            except ApiException as exc:
                problem = problem_of(exc, kind)
                return RouteVerdict(False, problem.reason, problem.message)
            verdicts.append(route_verdict(route, kind))
        return routes_verdict(verdicts)

    def missing_gateways(self, namespace: str, exposure: GatewayExposure) -> list[str]:
        """parentRefs naming a Gateway that does not exist (no gateway controller reports on those)."""
        missing = []
        for ref in exposure.parent_refs:
            where = ref.namespace or namespace
            try:
                found = self.kube.get("Gateway", where, ref.name)
            except ApiException:
                continue  # not allowed to look, or no Gateway API: the routes' own status tells
            if found is None:
                missing.append(f"{where}/{ref.name}")
        return missing

    def judge(
        self,
        owner: Mapping[str, Any],
        problem: RouteProblem | None,
        routes: Sequence[tuple[str, str]],
        exposure: GatewayExposure | None = None,
    ) -> RouteVerdict:
        """The routes' verdict: a failed apply or a missing Gateway, else what the gateway wrote."""
        if problem is None and exposure is not None:
            missing = self.missing_gateways(owner["metadata"]["namespace"], exposure)
            if missing:
                problem = RouteProblem(
                    "GatewayNotFound",
                    f"spec.gateway.parentRefs names Gateway {', '.join(missing)}, which does not exist: "
                    "fix the parentRef (name, namespace) or create the Gateway",
                )
        if problem is not None:
            return RouteVerdict(False, problem.reason, problem.message, False)
        return self.verdict(owner["metadata"]["namespace"], routes)


def routed_condition(verdict: RouteVerdict) -> DecidedCondition:
    """Routed: False when applying failed or a gateway refused; Unknown until a gateway answers."""
    status = {True: ConditionStatus.TRUE, False: ConditionStatus.FALSE, None: ConditionStatus.UNKNOWN}
    return DecidedCondition(ConditionType.ROUTED, status[verdict.ok], verdict.reason, verdict.message)
