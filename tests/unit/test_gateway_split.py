"""Models and servers exposed through a Gateway: routes, the gateway's verdict, pools and their weights,
copies, and the admission rules of a split across servers (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from triton_operator.api.gateway import GatewayExposure
from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.observe.metrics import Scrape
from triton_operator.observe.pools import across_servers
from triton_operator.observe.rollout import TrafficOutcome, pool_counters, version_window
from triton_operator.reconcile.traffic import read_state
from triton_operator.render.routes import (
    Backend,
    RouteVerdict,
    model_routes,
    route_verdict,
    routes_verdict,
    server_routes,
)
from triton_operator.render.split import copy_name, copy_spec
from triton_operator.rollout.machine import begin, decide
from triton_operator.rollout.plan import RolloutPlan, Step
from triton_operator.rollout.pools import placed_pools, serving_weights
from triton_operator.rollout.state import Phase, RolloutState
from triton_operator.triton.metrics import MetricsSnapshot, ModelCounters, RoutedCounts

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
GATEWAY = {"parentRefs": [{"name": "sandbox", "namespace": "gateway-system", "sectionName": "http"}]}
SOURCE = {"s3": {"bucket": "models", "prefix": "mnist"}}


def exposure(**extra: Any) -> GatewayExposure:
    return GatewayExposure.model_validate({**GATEWAY, **extra})


# -- routes -----------------------------------------------------------------------------------------------
def test_a_server_gets_an_httproute_and_a_grpcroute_to_its_service() -> None:
    http, grpc = server_routes("pool-a", "ml", "pool-a", exposure(hostnames=["a.example"]), {"x": "y"})
    assert (http["kind"], grpc["kind"]) == ("HTTPRoute", "GRPCRoute")
    assert http["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert http["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "sandbox",
            "namespace": "gateway-system",
            "sectionName": "http",
        }
    ]
    assert http["spec"]["hostnames"] == ["a.example"]
    (rule,) = http["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "pool-a", "port": 8000, "weight": 1}]
    # Health, metadata and models; never the repository API (loads belong to the operator).
    assert [m["path"]["value"] for m in rule["matches"]] == ["/v2", "/v2/health", "/v2/models"]
    (grpc_rule,) = grpc["spec"]["rules"]
    assert grpc_rule["backendRefs"] == [{"name": "pool-a", "port": 8001, "weight": 1}]
    methods = {m["method"]["method"] for m in grpc_rule["matches"]}
    assert {"ModelInfer", "ModelStreamInfer", "ServerReady"} <= methods
    assert not {"RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex"} & methods
    assert {m["method"]["service"] for m in grpc_rule["matches"]} == {"inference.GRPCInferenceService"}
    assert http["metadata"] == {"name": "pool-a", "namespace": "ml", "labels": {"x": "y"}}
    # Never the HTTPRoute's name: Contour keeps route status by namespace/name.
    assert grpc["metadata"]["name"] == "pool-a-grpc"


def test_a_split_model_routes_its_own_path_by_weight_and_grpc_only_with_hostnames() -> None:
    backends = [Backend("pool-a", 90), Backend("pool-b", 10)]
    (http,) = model_routes("mnist", "ml", "mnist", exposure(), backends, {})
    assert http["metadata"]["name"] == "model-mnist"
    assert http["spec"]["rules"] == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/mnist"}}],
            "backendRefs": [
                {"name": "pool-a", "port": 8000, "weight": 90},
                {"name": "pool-b", "port": 8000, "weight": 10},
            ],
        }
    ]
    http, grpc = model_routes("mnist", "ml", "mnist", exposure(hostnames=["mnist.example"]), backends, {})
    assert grpc["kind"] == "GRPCRoute" and grpc["spec"]["hostnames"] == ["mnist.example"]
    assert grpc["metadata"]["name"] == "model-mnist-grpc"
    assert [b["weight"] for b in grpc["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    assert len(grpc["spec"]["rules"][0]["matches"]) == 9
    assert [b["port"] for b in grpc["spec"]["rules"][0]["backendRefs"]] == [8001, 8001]


def _route(generation: int, *parents: dict[str, Any], refs: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"parentRefs": [{"name": "gw"}] * refs},
        "status": {"parents": list(parents)},
    }


def _parent(accepted: str, resolved: str = "True", generation: int = 2, **why: str) -> dict[str, Any]:
    return {
        "parentRef": {"name": "gw", "namespace": "gateway-system"},
        "conditions": [
            {"type": "Accepted", "status": accepted, "observedGeneration": generation, **why},
            {"type": "ResolvedRefs", "status": resolved, "observedGeneration": generation},
        ],
    }


@pytest.mark.parametrize(
    ("route", "ok", "reason", "current"),
    [
        (None, None, "RouteMissing", False),
        (_route(2), None, "WaitingForGateway", False),
        (_route(2, _parent("True")), True, "Accepted", True),
        # An answer about an older generation still holds (the gateway serves that config meanwhile),
        # but it is not about the latest spec yet.
        (_route(3, _parent("True")), True, "Accepted", False),
        (_route(3, _parent("False", reason="NoMatchingParent")), False, "NoMatchingParent", False),
        (
            _route(2, _parent("False", reason="NoMatchingParent", message="no such gateway")),
            False,
            "NoMatchingParent",
            True,
        ),
        (_route(2, _parent("True", "False")), False, "ResolvedRefs", True),
        (_route(2, _parent("True"), refs=2), None, "WaitingForGateway", False),
    ],
)
def test_route_verdicts_read_every_parent(
    route: dict[str, Any] | None, ok: bool | None, reason: str, current: bool
) -> None:
    verdict = route_verdict(route, "HTTPRoute")
    assert (verdict.ok, verdict.reason, verdict.current) == (ok, reason, current)


def test_a_refusal_names_the_gateway_and_its_words() -> None:
    route = _route(2, _parent("False", reason="NoMatchingParent", message="gateway not found"))
    verdict = route_verdict(route, "HTTPRoute")
    assert verdict.message == (
        "HTTPRoute Accepted=False on Gateway gateway-system/gw: NoMatchingParent: gateway not found"
    )


def test_routes_verdict_puts_a_refusal_before_waiting() -> None:
    waiting, refused, ok = (
        RouteVerdict(None, "WaitingForGateway", "w"),
        RouteVerdict(False, "NotAllowedByListeners", "r"),
        RouteVerdict(True, "Accepted", "a"),
    )
    assert routes_verdict([waiting, refused, ok]).reason == "NotAllowedByListeners"
    assert routes_verdict([ok, waiting]).reason == "WaitingForGateway"
    assert routes_verdict([ok, ok]).ok is True
    stale = RouteVerdict(True, "Accepted", "a", current=False)
    assert routes_verdict([ok, stale]) == RouteVerdict(
        True, "Accepted", "the Gateway accepted the routes and resolved every backend", current=False
    )


# -- pools ------------------------------------------------------------------------------------------------
PLAN = RolloutPlan((Step(10, 30.0), Step(50, 30.0)), 10.0, subject="server")


def state(phase: Phase, stable: str, canary: str, step: int = 0) -> RolloutState:
    return RolloutState(phase, stable, canary, step, NOW)


@pytest.mark.parametrize(
    ("rollout", "weights"),
    [
        (state(Phase.PROMOTED, "a", "a"), {"a": 100}),
        (state(Phase.PROGRESSING, "a", "b", 0), {"a": 90, "b": 10}),
        (state(Phase.PROGRESSING, "a", "b", 1), {"a": 50, "b": 50}),
        (state(Phase.PROMOTED, "a", "b"), {"b": 100, "a": 0}),
        (state(Phase.ROLLED_BACK, "a", "b"), {"a": 100, "b": 0}),
    ],
)
def test_canary_weights_by_phase(rollout: RolloutState, weights: dict[str, int]) -> None:
    assert decide(PLAN, rollout, None, NOW).weights == weights


@pytest.mark.parametrize(
    ("desired", "serving", "routed"),
    [
        ({"a": 90, "b": 10}, {"a": True, "b": True}, {"a": 90, "b": 10}),
        # A pool with no ready replica gets nothing at once (its share would get 503).
        ({"a": 90, "b": 10}, {"a": True, "b": False}, {"a": 90, "b": 0}),
        ({"a": 90, "b": 10}, {"a": False, "b": True}, {"a": 0, "b": 10}),
        # Nobody serves: keep the weights (the first pool back gets its share at once).
        ({"a": 90, "b": 10}, {"a": False, "b": False}, {"a": 90, "b": 10}),
        ({"a": 100, "b": 0}, {"a": True}, {"a": 100, "b": 0}),
    ],
)
def test_serving_weights_zero_a_pool_that_serves_nothing(
    desired: dict[str, int], serving: dict[str, bool], routed: dict[str, int]
) -> None:
    assert serving_weights(desired, serving) == routed


def test_placed_pools() -> None:
    assert placed_pools({"a": 50, "b": 50}, None, "a") == ["a", "b"]
    assert placed_pools(None, None, "b") == ["b"]
    assert placed_pools(None, state(Phase.PROGRESSING, "a", "b"), "b") == ["b", "a"]
    assert placed_pools(None, state(Phase.PROMOTED, "b", "b"), "b") == ["b"]
    # Rolled back: the stable keeps serving, the canary's copy stays for a retry.
    assert placed_pools(None, state(Phase.ROLLED_BACK, "a", "b"), "b") == ["b", "a"]


def test_messages_speak_of_servers() -> None:
    started = begin(PLAN, "pool-a", "pool-b", NOW)
    assert started.message.startswith("canary server pool-b against stable pool-a: step 1/2 (10%)")
    failing = decide(PLAN, started.state, None, NOW, canary_version="pool-a")
    assert "the spec asks for stable server pool-a again" in failing.message, failing.message


def test_pool_counters_sum_every_version_of_the_model_per_pod_of_each_pool() -> None:
    def scrape(*rows: ModelCounters) -> Scrape:
        return Scrape(MetricsSnapshot(models={(r.model, r.version): r for r in rows}), 1.0)

    a = scrape(
        ModelCounters("mnist", "1", success_count=10, failure_count=1, inference_count=11),
        ModelCounters("other", "1", success_count=99, inference_count=99),
    )
    b = scrape(ModelCounters("mnist", "1", success_count=3, inference_count=3))
    samples = pool_counters({"pool-a": {"p0": a}, "pool-b": {"p0": b}}, "mnist")
    assert set(samples) == {("pool-a/p0", "pool-a"), ("pool-b/p0", "pool-b")}
    window = version_window({}, samples, "pool-a", 10.0)
    assert (window.requests, window.failures, window.inferences) == (11, 1, 11)
    # Behind the router: requests by the outcome clients saw (error responses are failures there).
    routed = Scrape(
        MetricsSnapshot(
            models={("mnist", "1"): ModelCounters("mnist", "1", success_count=10, inference_count=10)},
            routed={("mnist", "mnist~versions", "1"): RoutedCounts(success=8, failure=2)},
        ),
        1.0,
    )
    window = version_window({}, pool_counters({"pool-a": {"p0": routed}}, "mnist"), "pool-a", 10.0)
    assert (window.requests, window.failures, window.inferences) == (10, 2, 10)


# -- copies and status --------------------------------------------------------------------------------
def test_each_copy_is_the_parents_model_on_one_server() -> None:
    spec = TritonModelSpec.model_validate(
        {"serverRef": {"name": "a"}, "version": 3, "source": SOURCE, "gateway": GATEWAY}
    )
    assert copy_spec(spec, "mnist", "b") == {
        "serverRef": {"name": "b"},
        "modelName": "mnist",
        "version": 3,
        "source": {"s3": {"bucket": "models", "prefix": "mnist"}},
        "keepFilesOnDelete": True,
        # Behind the router: it counts error responses, which Triton's request counters do not.
        "rollout": {"strategy": "Canary"},
    }
    copy = TritonModelSpec.model_validate(copy_spec(spec, "mnist", "b"))
    assert copy.gateway is None and copy.routed
    canary = {"strategy": "Canary", "steps": [{"weight": 50, "pauseSeconds": 10}]}
    with_steps = spec.model_copy(
        update={
            "rollout": TritonModelSpec.model_validate(
                {**_split(), "experiment": None, "rollout": canary}
            ).rollout
        }
    )
    assert copy_spec(with_steps, "mnist", "b")["rollout"]["steps"] == [{"weight": 50, "pauseSeconds": 10}]
    assert copy_name("mnist", "pool-b") == "mnist-on-pool-b"
    long = copy_name("m" * 200, "s" * 100)
    assert len(long) == 253 and long != copy_name("m" * 200, "s" * 99 + "t")


def test_the_split_rollout_status_round_trips_with_servers() -> None:
    rollout = state(Phase.PROGRESSING, "pool-a", "pool-b", 1)
    outcome = TrafficOutcome(rollout.to_status(), [{"version": "pool-b"}], None, (True, "StepAdvanced", ""))
    shown = across_servers(outcome, 3)
    assert shown.traffic == [{"server": "pool-b", "version": "3"}]
    written = shown.rollout
    assert written is not None
    assert (written["stableServer"], written["canaryServer"]) == ("pool-a", "pool-b")
    assert (written["stableVersion"], written["canaryVersion"]) == ("3", "3")
    assert read_state({"rollout": written}, subject="server") == rollout
    assert read_state({"rollout": {"stableVersion": "1"}}, subject="server") is None


# -- admission (the pydantic mirror of the CRD's CEL rules) ----------------------------------------------
def _split(**spec: Any) -> dict[str, Any]:
    return {
        "serverRef": {"name": "a"},
        "source": SOURCE,
        "gateway": GATEWAY,
        "experiment": {"servers": [{"name": "a", "weight": 90}, {"name": "b", "weight": 10}]},
        **spec,
    }


def test_a_split_across_servers_is_admitted() -> None:
    spec = TritonModelSpec.model_validate(_split())
    assert spec.pool_weights() == {"a": 90, "b": 10}
    assert spec.through_gateway and not spec.routed


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (
            _split(experiment={"servers": [{"name": "a", "weight": 90}, {"name": "b", "weight": 20}]}),
            "weights sum to 110, not 100",
        ),
        (
            _split(experiment={"servers": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]}),
            "is named twice",
        ),
        (_split(gateway=None), "set spec.gateway"),
        (_split(serverRef={"name": "c"}), "spec.serverRef.name must be one of spec.experiment.servers"),
        (
            _split(experiment={"servers": [{"name": "a", "namespace": "other", "weight": 100}]}),
            "Extra inputs are not permitted",
        ),
        (
            _split(experiment={"variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}),
            "cannot be combined with spec.gateway",
        ),
    ],
)
def test_bad_splits_are_refused_naming_the_field(spec: dict[str, Any], text: str) -> None:
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(ValidationError, match=text):
        TritonModelSpec.model_validate(spec)


def test_a_server_may_be_exposed_through_a_gateway() -> None:
    spec = TritonServerSpec.model_validate({"gateway": {**GATEWAY, "hostnames": ["*.models.example"]}})
    assert spec.gateway is not None and spec.gateway.hostnames == ["*.models.example"]
    with pytest.raises(ValidationError):
        TritonServerSpec.model_validate({"gateway": {"parentRefs": []}})
    with pytest.raises(ValidationError):
        TritonServerSpec.model_validate({"gateway": {**GATEWAY, "hostnames": ["Not A Host"]}})


def test_a_copy_whose_spec_only_gained_defaults_is_not_applied_again() -> None:
    from triton_operator.observe.pools import same_spec

    wanted = {"serverRef": {"name": "b"}, "config": {"inputs": [{"name": "x"}]}, "version": 1}
    defaulted = {"serverRef": {"name": "b"}, "config": {"inputs": [{"name": "x", "dims": [1]}]}, "version": 1}
    assert same_spec(defaulted, wanted)
    assert not same_spec({**defaulted, "version": 2}, wanted)
    assert not same_spec({**defaulted, "config": {"inputs": []}}, wanted)


def test_a_refused_route_makes_the_server_degraded_but_not_unready() -> None:
    from triton_operator.api.common import ConditionStatus
    from triton_operator.conditions import DecidedCondition
    from triton_operator.observe.server import with_route_problem

    ready = DecidedCondition("Ready", ConditionStatus.TRUE, "AllReplicasReady", "2/2")
    degraded = DecidedCondition("Degraded", ConditionStatus.FALSE, "AsExpected", "")
    refused = DecidedCondition("Routed", ConditionStatus.FALSE, "NoMatchingParent", "no listener")
    out = {c.type: c for c in with_route_problem([ready, degraded], refused)}
    assert out["Ready"] == ready and out["Routed"] == refused
    assert (out["Degraded"].status, out["Degraded"].reason) == ("True", "NoMatchingParent")
    accepted = DecidedCondition("Routed", ConditionStatus.TRUE, "Accepted", "")
    assert with_route_problem([ready, degraded], accepted) == [ready, degraded, accepted]


def test_the_gateway_examples_are_valid_specs() -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "examples"
    docs = [
        doc
        for path in sorted((root / "gateway").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    servers = [TritonServerSpec.model_validate(d["spec"]) for d in docs if d["kind"] == "TritonServer"]
    models = [TritonModelSpec.model_validate(d["spec"]) for d in docs if d["kind"] == "TritonModel"]
    assert len(servers) == 2 and all(server.gateway is not None for server in servers)
    assert [model.pool_weights() for model in models] == [{"triton-a": 90, "triton-b": 10}]


def _pool(server: str, **kw: Any) -> Any:
    from triton_operator.observe.pools import Pool

    facts: dict[str, Any] = {"exists": True, "ready_pods": 1, "copy_ready": True, "copy_message": ""}
    return Pool(server, **{**facts, **kw})


ROUTED = {
    "ok": ("Routed", "True", "Accepted", "accepted"),
    "waiting": ("Routed", "Unknown", "WaitingForGateway", "no gateway has accepted the HTTPRoute yet"),
    "refused": ("Routed", "False", "NotAllowedByListeners", "HTTPRoute Accepted=False"),
}


@pytest.mark.parametrize(
    ("pools", "routed", "expected"),
    [
        # (Ready, Progressing, Degraded) as (status, reason)
        ({}, "ok", (("True", "Serving"), ("False", "ExperimentRunning"), ("False", "AsExpected"))),
        # A fresh model: copies being placed and the gateway yet to answer are progress, not problems.
        (
            {"b": {"copy_ready": False, "copy_message": "staging"}},
            "waiting",
            (("False", "PlacingCopies"), ("True", "PlacingCopies"), ("False", "AsExpected")),
        ),
        (
            {},
            "waiting",
            (("False", "WaitingForGateway"), ("True", "WaitingForGateway"), ("False", "AsExpected")),
        ),
        (
            {"b": {"exists": False, "copy_ready": False, "copy_message": "TritonServer b does not exist"}},
            "ok",
            (("False", "ServerNotFound"), ("False", "ExperimentRunning"), ("True", "ServerNotFound")),
        ),
        (
            {},
            "refused",
            (
                ("False", "NotAllowedByListeners"),
                ("False", "ExperimentRunning"),
                ("True", "NotAllowedByListeners"),
            ),
        ),
        (
            {"b": {"copy_ready": False, "copy_failed": True, "copy_message": "staging failed"}},
            "ok",
            (("False", "LoadFailed"), ("False", "ExperimentRunning"), ("True", "LoadFailed")),
        ),
        # Its replicas crashed: a problem; scaled to 0 on purpose: not one.
        (
            {"b": {"ready_pods": 0}},
            "ok",
            (("False", "ReplicasNotReady"), ("False", "ExperimentRunning"), ("True", "ReplicasNotReady")),
        ),
        (
            {"b": {"ready_pods": 0, "scaled_to_zero": True}},
            "ok",
            (("False", "ScaledToZero"), ("False", "ExperimentRunning"), ("False", "AsExpected")),
        ),
    ],
)
def test_split_conditions_tell_problems_from_progress(
    pools: dict[str, dict[str, Any]], routed: str, expected: tuple[tuple[str, str], ...]
) -> None:
    from triton_operator.conditions import DecidedCondition
    from triton_operator.observe.pools import split_conditions

    facts = {"a": _pool("a"), "b": _pool("b", **pools.get("b", {}))}
    outcome = TrafficOutcome(None, [], None, (False, "ExperimentRunning", "holding 90/10"))
    route = DecidedCondition(*ROUTED[routed])
    got = split_conditions(facts, {"a": 90, "b": 10}, {"a": 90, "b": 10}, outcome, route)
    assert tuple((c.status, c.reason) for c in got[:3]) == expected
    assert got[3] == route


def test_a_rolled_back_split_is_degraded_and_not_ready() -> None:
    from triton_operator.conditions import DecidedCondition
    from triton_operator.observe.pools import split_conditions

    ended = (False, "RolledBack", "canary server b failed")
    outcome = TrafficOutcome({}, [], ended, ended, (True, "RolledBack", "canary server b failed"))
    route = DecidedCondition(*ROUTED["ok"])
    got = split_conditions(
        {"a": _pool("a"), "b": _pool("b")}, {"a": 100, "b": 0}, {"a": 100, "b": 0}, outcome, route
    )
    assert [(c.type, c.status, c.reason) for c in got[:3]] == [
        ("Ready", "False", "RolledBack"),
        ("Progressing", "False", "RolledBack"),
        ("Degraded", "True", "RolledBack"),
    ]


def test_weight_to_sums_a_services_share_over_rules() -> None:
    from triton_operator.render.routes import weight_to

    route = {
        "spec": {
            "rules": [
                {"backendRefs": [{"name": "pool-a", "weight": 90}, {"name": "pool-b", "weight": 10}]},
                {"backendRefs": [{"name": "pool-b"}]},
            ]
        }
    }
    assert (weight_to(route, "pool-a"), weight_to(route, "pool-b"), weight_to(route, "pool-c")) == (90, 11, 0)
