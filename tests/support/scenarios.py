"""The scripts of whole-pass scenarios, each a user's story from `kubectl apply` to what they check.

Each script drives a `World` and names its checkpoints (`world.checkpoint(name)`): the middle tier's
tests assert on what a user sees there, and the restart measure (issue 18, point 3) restarts the
operator at one of them and counts the work the restarted operator redid. A script waits with
`world.until(...)`, never a fixed number of passes, so a restarted operator that needs a pass more to
get its bearings still gets there (and its extra work is what the measure counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.scenario import NS, World, model_spec, server_spec

MODEL = "mnist"
CANARY = {
    "strategy": "Canary",
    "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 50, "pauseSeconds": 30}, {"weight": 100}],
    "analysis": {"minRequests": 100, "intervalSeconds": 10, "maxFailureRatio": 0.05},
}
V2_SOURCE = {"s3": {"bucket": "models", "prefix": "m/2"}}
EXPERIMENT = {"variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10, "source": V2_SOURCE}]}
GATEWAY = {"parentRefs": [{"name": "gateway", "namespace": NS}]}
STEP_S = 10.0  # the clock moves this much per round of passes (the analysis interval)


def rollout(world: World) -> dict[str, Any]:
    return dict(world.status(MODEL).get("rollout") or {})


def ready(world: World, name: str = MODEL) -> bool:
    return world.condition(name, "Ready")[0] == "True"


def loaded_everywhere(world: World, name: str = MODEL) -> bool:
    status = world.status(name)
    replicas = status.get("replicas") or []
    return bool(replicas) and all(r["state"] == "READY" for r in replicas) and ready(world, name)


def served_only(world: World, version: int, server: str = "triton") -> bool:
    """Every pod of the server has exactly `version` of the routed model's versions loaded."""
    tritons = world.tritons_of(server)
    return bool(tritons) and all(t.ready_versions(f"{MODEL}~versions") == {version} for t in tritons)


def serve_version_1(world: World, spec: dict[str, Any]) -> None:
    world.add_server("triton")
    world.add_model(MODEL, spec)
    world.until(loaded_everywhere, advance_s=STEP_S)


def fresh_model(world: World) -> None:
    """A model on a server of two replicas: staged once, loaded on both."""
    serve_version_1(world, model_spec("triton"))
    world.round()  # the server's pass sees the pods' gates open
    world.checkpoint("fresh/served")


def canary(world: World) -> None:
    """Version 1 serves; version 2 goes 10%, 50%, 100% on healthy traffic, is promoted, version 1 goes."""
    world.traffic = lambda w: w.clients()
    serve_version_1(world, model_spec("triton", rollout=CANARY))
    world.set_spec("TritonModel", MODEL, model_spec("triton", 2, rollout=CANARY))
    world.round(jobs=False)
    world.checkpoint("canary/staging")
    world.until(lambda w: rollout(w).get("phase") == "Progressing", advance_s=STEP_S)
    world.checkpoint("canary/first-step")
    world.until(lambda w: rollout(w).get("stepIndex") == 2, advance_s=STEP_S)
    world.checkpoint("canary/last-step")
    world.until(lambda w: any("-remove-" in j for j in w.kube.created("Job")), advance_s=STEP_S, jobs=False)
    world.checkpoint("canary/retiring")  # promoted; the Job removing version 1's files still runs
    world.until(lambda w: served_only(w, 2) and ready(w), advance_s=STEP_S)
    world.checkpoint("canary/retired")


def rollback(world: World) -> None:
    """Version 2 fails a fifth of its requests: the analysis rolls it back, version 1 keeps serving."""
    world.traffic = lambda w: w.clients(failing={2: 0.2})
    serve_version_1(world, model_spec("triton", rollout=CANARY))
    world.set_spec("TritonModel", MODEL, model_spec("triton", 2, rollout=CANARY))
    world.until(lambda w: rollout(w).get("phase") == "Progressing", advance_s=STEP_S)
    world.checkpoint("rollback/first-step")
    world.until(lambda w: rollout(w).get("phase") == "RolledBack", advance_s=STEP_S)
    world.rounds(2, advance_s=STEP_S)
    world.checkpoint("rollback/rolled-back")


def experiment(world: World) -> None:
    """An A/B experiment, 90/10 between versions 1 and 2 (each from its own source), on two replicas."""
    world.traffic = lambda w: w.clients()
    world.add_server("triton")
    world.add_model(MODEL, model_spec("triton", experiment=EXPERIMENT))
    world.round(jobs=False)
    world.checkpoint("experiment/staging")
    world.until(loaded_everywhere, advance_s=STEP_S)
    world.checkpoint("experiment/serving")
    world.rounds(3, advance_s=STEP_S)
    world.checkpoint("experiment/measured")


def gateway_split(world: World) -> None:
    """One model on two servers behind a Gateway, split 90/10 between them."""
    world.traffic = lambda w: w.clients()
    world.kube.add({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "gateway", "namespace": NS}, "spec": {}})  # fmt: skip
    for server in ("triton-a", "triton-b"):
        world.add_server(server, server_spec(1, gateway={**GATEWAY, "hostnames": [f"{server}.local"]}))
    split = {"servers": [{"name": "triton-a", "weight": 90}, {"name": "triton-b", "weight": 10}]}
    gateway = {**GATEWAY, "hostnames": ["mnist.local"]}
    world.add_model(MODEL, model_spec("triton-a", gateway=gateway, experiment=split))
    world.rounds(2, jobs=False, advance_s=STEP_S)
    world.checkpoint("gateway/copies-staging")
    world.until(ready, advance_s=STEP_S)
    world.checkpoint("gateway/serving")
    world.rounds(3, advance_s=STEP_S)
    world.checkpoint("gateway/measured")


def server_roll(world: World) -> None:
    """A served model while its server's pods are all replaced: loaded on the new ones, no new Job."""
    serve_version_1(world, model_spec("triton"))
    world.roll_server("triton")
    world.checkpoint("roll/new-pods")
    world.until(loaded_everywhere, advance_s=STEP_S)
    world.checkpoint("roll/rolled")
    world.rounds(2, advance_s=STEP_S)


SCENARIOS: dict[str, Callable[[World], None]] = {
    "canary": canary,
    "rollback": rollback,
    "experiment": experiment,
    "gateway": gateway_split,
    "roll": server_roll,
}
