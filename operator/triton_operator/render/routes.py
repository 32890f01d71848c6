"""Gateway API routes the operator owns, and what a gateway said of them (pure).

A TritonServer with spec.gateway gets an HTTPRoute (Triton's HTTP API: health, metadata, models) and
a GRPCRoute (the same methods of inference.GRPCInferenceService) to its Service. A TritonModel served
through a Gateway gets an HTTPRoute for its own path prefix, `/v2/models/<modelName>`, whose backends
are the Services of the servers holding a copy, weighted; the longest path wins in Gateway API, so it
takes the model's requests from under the servers' own routes. gRPC carries the model name inside the
protobuf body, where no gateway looks (and gateways ignore per-backend rewrites), so a gRPC split is
per host name: with spec.gateway.hostnames the model gets a GRPCRoute for those names, and a gRPC
client that sets :authority to one of them is split like HTTP; without host names gRPC reaches each
server's own route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triton_operator.api.gateway import GatewayExposure
from triton_operator.render.server import GRPC_PORT, HTTP_PORT

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
GRPC_SERVICE = "inference.GRPCInferenceService"
# What a gateway exposes of Triton: health, metadata and inference. Not the repository API (loading
# and unloading belong to the operator), shared memory (meaningless off the pod's host), trace or log
# settings. Contour matches gRPC methods by exact name only (and a GRPCRoute rule without matches
# would also take plain HTTP POSTs meant for the HTTPRoute), so the methods are listed.
GRPC_METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
)
HTTP_MATCHES = (
    {"path": {"type": "Exact", "value": "/v2"}},
    {"path": {"type": "PathPrefix", "value": "/v2/health"}},
    {"path": {"type": "PathPrefix", "value": "/v2/models"}},
)
MODEL_ROUTE_PREFIX = "model-"
# A GRPCRoute never shares its HTTPRoute's name: Contour keeps route status by namespace/name, and of
# two same-named routes of both kinds only one ever gets a status (seen with v1.33.8).
GRPC_ROUTE_SUFFIX = "-grpc"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Backend:
    """A Service that gets a share of a route's traffic."""

    service: str
    weight: int


def parent_refs(exposure: GatewayExposure) -> list[Manifest]:
    refs = []
    for ref in exposure.parent_refs:
        entry: Manifest = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
        if ref.namespace is not None:
            entry["namespace"] = ref.namespace
        if ref.section_name is not None:
            entry["sectionName"] = ref.section_name
        if ref.port is not None:
            entry["port"] = ref.port
        refs.append(entry)
    return refs


def _route(
    kind: str, name: str, namespace: str, exposure: GatewayExposure, labels: Mapping[str, str], rule: Manifest
) -> Manifest:
    spec: Manifest = {"parentRefs": parent_refs(exposure), "rules": [rule]}
    if exposure.hostnames:
        spec["hostnames"] = list(exposure.hostnames)
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def _backend_refs(backends: Sequence[Backend], port: int) -> list[Manifest]:
    return [{"name": b.service, "port": port, "weight": b.weight} for b in backends]


def _grpc_matches() -> list[Manifest]:
    return [{"method": {"type": "Exact", "service": GRPC_SERVICE, "method": m}} for m in GRPC_METHODS]


def server_route_names(name: str) -> list[tuple[str, str]]:
    """(kind, name) of every route a TritonServer may own."""
    return [("HTTPRoute", name), ("GRPCRoute", name + GRPC_ROUTE_SUFFIX)]


def model_route_names(model_resource: str) -> list[tuple[str, str]]:
    """(kind, name) of every route a TritonModel served through a Gateway may own."""
    name = MODEL_ROUTE_PREFIX + model_resource
    return [("HTTPRoute", name), ("GRPCRoute", name + GRPC_ROUTE_SUFFIX)]


def server_routes(
    name: str, namespace: str, service: str, exposure: GatewayExposure, labels: Mapping[str, str]
) -> list[Manifest]:
    """The HTTPRoute and GRPCRoute of a TritonServer: everything to its Service."""
    (_, http_name), (_, grpc_name) = server_route_names(name)
    backend = [Backend(service, 1)]
    http_rule = {"matches": [dict(m) for m in HTTP_MATCHES], "backendRefs": _backend_refs(backend, HTTP_PORT)}
    grpc_rule = {"matches": _grpc_matches(), "backendRefs": _backend_refs(backend, GRPC_PORT)}
    return [
        _route("HTTPRoute", http_name, namespace, exposure, labels, http_rule),
        _route("GRPCRoute", grpc_name, namespace, exposure, labels, grpc_rule),
    ]


def model_routes(
    resource: str,
    namespace: str,
    model_name: str,
    exposure: GatewayExposure,
    backends: Sequence[Backend],
    labels: Mapping[str, str],
) -> list[Manifest]:
    """The routes of a model split across servers: its HTTP path prefix, and gRPC per host name."""
    (_, http_name), (_, grpc_name) = model_route_names(resource)
    path = {"path": {"type": "PathPrefix", "value": f"/v2/models/{model_name}"}}
    http_rule = {"matches": [path], "backendRefs": _backend_refs(backends, HTTP_PORT)}
    routes = [_route("HTTPRoute", http_name, namespace, exposure, labels, http_rule)]
    if exposure.hostnames:
        grpc_rule = {"matches": _grpc_matches(), "backendRefs": _backend_refs(backends, GRPC_PORT)}
        routes.append(_route("GRPCRoute", grpc_name, namespace, exposure, labels, grpc_rule))
    return routes


@dataclass(frozen=True)
class RouteVerdict:
    """What the gateway(s) said of one route: accepted with every backend resolved, or why not.

    `current`: the answer is about the route's latest generation (a gateway serves the previous one's
    config until it has processed a new one, so an older acceptance still counts as accepted).
    """

    ok: bool | None  # None: no gateway has said anything yet
    reason: str
    message: str
    current: bool = True


def route_verdict(route: Mapping[str, Any] | None, kind: str) -> RouteVerdict:
    """Read a route's status.parents: every parent must accept it (Accepted) and resolve it (ResolvedRefs)."""
    if route is None:
        return RouteVerdict(None, "RouteMissing", f"the {kind} is not there yet", False)
    generation = (route.get("metadata") or {}).get("generation")
    parents = ((route.get("status") or {}).get("parents")) or []
    wanted = len((route.get("spec") or {}).get("parentRefs") or [])
    problems: list[tuple[str, str]] = []
    answered = 0
    current = True
    for parent in parents:
        ref = parent.get("parentRef") or {}
        gateway = "/".join(str(p) for p in (ref.get("namespace"), ref.get("name", "?")) if p)
        conditions = {c.get("type"): c for c in parent.get("conditions") or []}
        if not conditions:
            continue
        answered += 1
        if any(c.get("observedGeneration") not in (None, generation) for c in conditions.values()):
            current = False
        for ctype in ("Accepted", "ResolvedRefs"):
            cond = conditions.get(ctype)
            if cond is not None and cond.get("status") != "True":
                reason = str(cond.get("reason") or ctype)
                said = f": {cond['message']}" if cond.get("message") else ""
                problems.append((reason, f"{kind} {ctype}=False on Gateway {gateway}: {reason}{said}"))
    if problems:
        return RouteVerdict(False, problems[0][0], "; ".join(message for _, message in problems), current)
    if answered < max(wanted, 1):
        return RouteVerdict(None, "WaitingForGateway", f"no gateway has accepted the {kind} yet", False)
    return RouteVerdict(True, "Accepted", f"the {kind} is accepted by its Gateway(s)", current)


def routes_verdict(verdicts: Sequence[RouteVerdict]) -> RouteVerdict:
    """One verdict for an object's routes: a refusal first, then waiting, else accepted."""
    current = all(v.current for v in verdicts)
    for verdict in verdicts:
        if verdict.ok is False:
            message = "; ".join(v.message for v in verdicts if v.ok is False)
            return RouteVerdict(False, verdict.reason, message, current)
    for verdict in verdicts:
        if verdict.ok is None:
            return verdict
    message = "the Gateway accepted the routes and resolved every backend"
    return RouteVerdict(True, "Accepted", message, current)


def weight_to(route: Mapping[str, Any], service: str) -> int:
    """The weight a route gives a Service, summed over its rules (0 when it names it nowhere)."""
    rules = (route.get("spec") or {}).get("rules") or []
    return sum(
        int(ref.get("weight", 1))
        for rule in rules
        for ref in rule.get("backendRefs") or []
        if ref.get("name") == service and ref.get("kind", "Service") == "Service"
    )
