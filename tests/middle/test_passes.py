"""Whole passes without a cluster: each scenario of tests/support/scenarios.py as a user checks it
(`kubectl get tritonmodel -o yaml`, the Jobs, what each Triton has loaded), through the operator's
stable entry points only (the server pass and ModelReconciler.reconcile), so that a rewrite of the
model pass keeps these green without touching them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from triton_operator.render.labels import SPLIT_SHARE_ANNOTATION, label_selector

from tests.support.scenario import NS, World, model_spec
from tests.support.scenarios import (
    MODEL,
    canary,
    experiment,
    fresh_model,
    gateway_split,
    rollback,
    rollout,
    server_roll,
)

pytestmark = pytest.mark.unit
VERSIONS = f"{MODEL}~versions"  # a routed model's versions, behind its router


def traffic(world: World, name: str = MODEL) -> dict[str, dict[str, Any]]:
    """status.traffic by version (or by server, split across servers)."""
    return {e.get("server") or e["version"]: e for e in world.status(name).get("traffic") or []}


def router_weights(world: World, server: str = "triton") -> list[dict[str, int]]:
    """The weights by version in the router each pod has loaded (its variants parameter)."""
    out = []
    for triton in world.tritons_of(server):
        params = triton.loaded[MODEL].config["parameters"]
        out.append(
            {str(v["version"]): int(v["weight"]) for v in json.loads(params["variants"]["string_value"])}
        )
    return out


def test_a_fresh_model_is_staged_once_and_loaded_on_both_replicas(world: World) -> None:
    fresh_model(world)
    status = world.status(MODEL)
    assert (status["servedVersion"], status["loaded"]) == (1, "2/2")
    assert [t.files(MODEL) for t in world.tritons_of("triton")] == [{1: status["stagedDigest"]}] * 2
    assert [r["state"] for r in status["replicas"]] == ["READY", "READY"]
    assert world.condition(MODEL, "Ready") == ("True", "Loaded")
    assert world.kube.created("Job") == [status["stagingJob"]]
    assert world.kube.list("Job", NS) == []  # a completed staging Job is deleted (status remembers it)
    assert [t.loads for t in world.tritons_of("triton")] == [[(MODEL, False)]] * 2
    # The pods' models-loaded gate opened: both serve through the Service.
    server = world.status("triton", "TritonServer")
    assert (server["readyReplicas"], [p["modelsLoaded"] for p in server["pods"]]) == (2, [[MODEL]] * 2)


def test_a_canary_goes_through_its_steps_to_promotion(world: World) -> None:
    def staging(w: World) -> None:
        assert w.status(MODEL)["servedVersion"] == 1
        assert w.condition(MODEL, "Progressing") == ("True", "CanaryLoading")
        assert router_weights(w) == [{"1": 100}] * 2

    def first_step(w: World) -> None:
        assert (rollout(w)["canaryWeight"], rollout(w)["stepIndex"]) == (10, 0)
        assert {v: e["desiredWeight"] for v, e in traffic(w).items()} == {"1": 90, "2": 10}
        assert all(t.ready_versions(VERSIONS) == {1, 2} for t in w.tritons_of("triton"))

    def last_step(w: World) -> None:
        assert rollout(w)["canaryWeight"] == 100 and w.condition(MODEL, "Ready")[0] == "False"

    world.checks = {"canary/staging": staging, "canary/first-step": first_step, "canary/last-step": last_step}
    canary(world)
    status = world.status(MODEL)
    assert (rollout(world)["phase"], rollout(world)["stableVersion"], status["servedVersion"]) == (
        "Promoted",
        "2",
        2,
    )
    assert world.condition(MODEL, "Ready")[0] == "True"
    assert router_weights(world) == [{"2": 100}] * 2
    # Two staging Jobs (one per version) and one removal of version 1's files; nothing else.
    jobs = world.kube.created("Job")
    assert len(jobs) == 3 and "-remove-" in jobs[2], jobs
    assert world.repositories["triton"].versions[VERSIONS] == {2}
    assert all(t.ready_versions(VERSIONS) == {2} for t in world.tritons_of("triton"))


def test_a_failing_canary_is_rolled_back_and_version_1_serves_everything(world: World) -> None:
    rollback(world)
    assert (rollout(world)["phase"], world.status(MODEL)["servedVersion"]) == ("RolledBack", 1)
    assert "failure ratio" in rollout(world)["message"]
    assert world.condition(MODEL, "Degraded") == ("True", "RolledBack")
    assert world.condition(MODEL, "Stalled")[0] == "True"  # only a new spec ends it
    assert router_weights(world) == [{"1": 100, "2": 0}] * 2
    assert (MODEL, "Warning", "RolledBack") in {e[:3] for e in world.event_list()}


def test_an_experiment_serves_both_versions_on_both_replicas_90_10(world: World) -> None:
    experiment(world)
    assert len(world.kube.created("Job")) == 2  # each version from its own source
    assert all(t.ready_versions(VERSIONS) == {1, 2} for t in world.tritons_of("triton"))
    assert router_weights(world) == [{"1": 90, "2": 10}] * 2
    shares = {v: e["observedShare"] for v, e in traffic(world).items()}
    assert shares == {"1": 90.0, "2": 10.0}
    assert world.condition(MODEL, "Ready")[0] == "True"
    assert world.condition(MODEL, "Progressing") == ("False", "ExperimentRunning")


def test_a_gateway_splits_one_model_across_two_servers(world: World) -> None:
    gateway_split(world)
    copies = {f"{MODEL}-on-triton-a", f"{MODEL}-on-triton-b"}
    assert set(world.names("TritonModel")) == {MODEL, *copies}
    for copy in copies:  # each copy staged and loaded on its own server
        assert world.status(copy)["servedVersion"] == 1 and world.condition(copy, "Ready")[0] == "True"
    route = world.body("HTTPRoute", f"model-{MODEL}")
    backends = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    assert backends == {"triton-a": 90, "triton-b": 10}
    assert {s: e["observedShare"] for s, e in traffic(world).items()} == {"triton-a": 90.0, "triton-b": 10.0}
    assert world.condition(MODEL, "Routed") == ("True", "Accepted")
    assert world.condition(MODEL, "Ready")[0] == "True"
    # Each copy says its share (kubectl get's SHARE column), not a canary's weight.
    shares = {
        c: world.body("TritonModel", c)["metadata"]["annotations"][SPLIT_SHARE_ANNOTATION] for c in copies
    }
    assert shares == {f"{MODEL}-on-triton-a": "90", f"{MODEL}-on-triton-b": "10"}


def test_a_server_roll_loads_the_model_on_the_new_pods_without_staging_again(world: World) -> None:
    def new_pods(w: World) -> None:
        old = {r["pod"] for r in w.status(MODEL)["replicas"]}
        assert not old & set(w.names("Pod")), "the old pods are gone"

    world.checks = {"roll/new-pods": new_pods}
    server_roll(world)
    status = world.status(MODEL)
    pods = sorted(world.names("Pod", label_selector("triton")))  # Triton's pods, not the repository server's
    assert [r["pod"] for r in status["replicas"]] == pods
    assert (status["loaded"], world.condition(MODEL, "Ready")[0]) == ("2/2", "True")
    assert len(world.kube.created("Job")) == 1
    assert [t.loads for t in world.tritons_of("triton")] == [[(MODEL, False)]] * 2


@pytest.mark.parametrize("keep", [True, False])
def test_deleting_a_model_unloads_it_everywhere_and_keeps_or_removes_its_files(
    world: World, keep: bool
) -> None:
    fresh_model(world)
    world.set_spec("TritonModel", MODEL, model_spec("triton", keepFilesOnDelete=keep))
    done = world.delete_model(MODEL)
    tritons = world.tritons_of("triton")
    assert [t.unloads for t in tritons] == [[MODEL]] * 2 and all(not t.loaded for t in tritons)
    removals = [j for j in world.kube.created("Job") if "-remove-" in j]
    assert (done, len(removals)) == ((True, 0) if keep else (False, 1))  # the removal Job runs first
    world.finish_jobs()
    assert done or world.delete_model(MODEL)
    assert world.names("TritonModel") == [] and world.kube.list("Job", NS) == []
    assert world.repositories["triton"].versions[MODEL] == ({1} if keep else set())


def test_each_server_apply_writes_each_child_once(world: World) -> None:
    """Layout PerReplica applies the repository Service first (its ClusterIP goes into the pods' sync
    sidecars); the apply that follows must not write it a second time."""
    world.add_server("triton")
    world.round(jobs=False)
    applies = [(c.kind, c.name) for c in world.kube.calls if c.verb == "apply"]
    deployments = applies.count(("Deployment", "triton"))
    assert deployments >= 1
    assert applies.count(("Service", "triton-repository")) == deployments
    assert applies.count(("Deployment", "triton-repository")) == deployments
