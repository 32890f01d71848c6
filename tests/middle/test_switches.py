"""Switching a live model between direct and routed, or between servers, leaves nothing loaded that the
spec does not want (issue 18, point 7): whole passes, asserting each fake Triton's loaded set afterwards.
Each switch also runs with the operator restarted right after the spec changed: what is left over is
found from Triton's index and the TritonModels, not from memory."""

from __future__ import annotations

import pytest

from tests.support.faketriton import Loaded, model_config
from tests.support.scenario import World, model_spec
from tests.support.scenarios import (
    CANARY,
    GATEWAY,
    MODEL,
    STEP_S,
    canary,
    experiment,
    fresh_model,
    gateway_split,
    loaded_everywhere,
    ready,
    rollout,
    serve_version_1,
)

pytestmark = pytest.mark.unit
VERSIONS = f"{MODEL}~versions"


def loaded(world: World, server: str = "triton") -> list[set[str]]:
    """The names each pod's Triton has loaded (a router included: Triton does not index it)."""
    return [set(t.loaded) for t in world.tritons_of(server)]


def served_direct(world: World, version: int, server: str = "triton") -> bool:
    """Every pod serves the model itself (not a router), `version` only, and nothing else."""
    tritons = world.tritons_of(server)
    return bool(tritons) and all(
        set(t.loaded) == {MODEL} and not t.loaded[MODEL].from_files and t.ready_versions(MODEL) == {version}
        for t in tritons
    )


def switch(world: World, spec: dict[str, object], restart: bool) -> None:
    world.set_spec("TritonModel", MODEL, spec)
    if restart:
        world.restart_operator()


@pytest.fixture(params=[False, True], ids=["running", "restarted"])
def restart(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_direct_to_routed_leaves_the_router_in_front_of_the_versions(world: World, restart: bool) -> None:
    fresh_model(world)
    switch(world, model_spec("triton", rollout=CANARY), restart)
    world.until(lambda w: ready(w) and all(t.loaded[MODEL].from_files for t in w.tritons_of("triton")))
    world.rounds(2, advance_s=STEP_S)
    assert loaded(world) == [{MODEL, VERSIONS}] * 2
    assert all(t.ready_versions(VERSIONS) == {1} for t in world.tritons_of("triton"))


def test_routed_to_direct_after_a_promotion_unloads_the_versions(world: World, restart: bool) -> None:
    canary(world)
    switch(world, model_spec("triton", 2), restart)
    world.until(lambda w: served_direct(w, 2) and ready(w), advance_s=STEP_S)
    assert loaded(world) == [{MODEL}] * 2
    # Never both gone at once: each pod's versions went after its own model replaced the router.
    unloads = [t.unloads for t in world.tritons_of("triton")]
    assert unloads == [[VERSIONS]] * 2


def test_routed_to_direct_after_an_abort_unloads_the_versions(world: World, restart: bool) -> None:
    world.traffic = lambda w: w.clients()
    serve_version_1(world, model_spec("triton", rollout=CANARY))
    world.set_spec("TritonModel", MODEL, model_spec("triton", 2, rollout=CANARY))
    world.until(lambda w: rollout(w).get("phase") == "Progressing", advance_s=STEP_S)
    world.command(MODEL, "abort")
    world.until(lambda w: rollout(w).get("phase") == "Aborted", advance_s=STEP_S)
    switch(world, model_spec("triton", 1), restart)
    world.until(lambda w: served_direct(w, 1) and ready(w), advance_s=STEP_S)
    world.rounds(2, advance_s=STEP_S)
    assert loaded(world) == [{MODEL}] * 2


def test_an_experiment_ended_for_one_version_unloads_the_versions(world: World, restart: bool) -> None:
    experiment(world)
    switch(world, model_spec("triton"), restart)
    world.until(lambda w: served_direct(w, 1) and ready(w), advance_s=STEP_S)
    world.rounds(2, advance_s=STEP_S)
    assert loaded(world) == [{MODEL}] * 2


@pytest.mark.parametrize("routed", [False, True], ids=["direct", "routed"])
def test_a_model_moved_to_another_server_is_unloaded_from_the_old_one_once_served(
    world: World, restart: bool, routed: bool
) -> None:
    extra = {"rollout": CANARY} if routed else {}
    serve_version_1(world, model_spec("triton", **extra))
    world.add_server("triton-b")
    switch(world, model_spec("triton-b", **extra), restart)
    world.rounds(3, jobs=False, advance_s=STEP_S)  # its files are not on triton-b yet
    wanted = {MODEL, VERSIONS} if routed else {MODEL}
    assert loaded(world, "triton") == [wanted] * 2, "the old server serves until the new one does"
    world.until(lambda w: loaded_everywhere(w) and loaded(w, "triton") == [set(), set()], advance_s=STEP_S)
    assert loaded(world, "triton-b") == [wanted] * 2


def test_a_server_taken_out_of_a_gateway_split_unloads_the_model(world: World, restart: bool) -> None:
    gateway_split(world)
    gateway = {**GATEWAY, "hostnames": ["mnist.local"]}
    switch(world, model_spec("triton-a", gateway=gateway), restart)
    world.until(lambda w: ready(w) and loaded(w, "triton-b") == [set()], advance_s=STEP_S)
    assert loaded(world, "triton-a") == [{MODEL, VERSIONS}]
    assert world.names("TritonModel") == [MODEL, f"{MODEL}-on-triton-a"]


def test_a_model_triton_serves_for_no_tritonmodel_stays(world: World) -> None:
    """Only names a TritonModel could load are unloaded: one loaded by hand stays."""
    fresh_model(world)
    world.repositories["triton"].stage("by-hand", 1)
    for t in world.tritons_of("triton"):
        t.loaded["by-hand"] = Loaded(("1",), model_config("by-hand"))
    world.rounds(2, advance_s=STEP_S)
    assert loaded(world) == [{MODEL, "by-hand"}] * 2


def test_a_model_taken_off_its_gateway_keeps_serving_on_its_server_and_leaves_the_other(
    world: World, restart: bool
) -> None:
    gateway_split(world)
    copies = [world.body("TritonModel", f"{MODEL}-on-{s}") for s in ("triton-a", "triton-b")]
    switch(world, model_spec("triton-a"), restart)
    world.round()
    assert world.names("TritonModel") == [MODEL] and f"model-{MODEL}" not in world.names("HTTPRoute")
    for copy in copies:  # each copy's finalizer, as kopf calls it with the copy's last body
        world.operator.models.delete(copy)
    world.until(lambda w: served_direct(w, 1, "triton-a") and ready(w), advance_s=STEP_S)
    world.rounds(2, advance_s=STEP_S)
    assert loaded(world, "triton-b") == [set()]
    # On triton-a the copy's finalizer left the name to the model: its router served until replaced.
    assert [t.unloads for t in world.tritons_of("triton-a")] == [[VERSIONS]]
