"""The models-loaded readiness gate: when a Triton pod may take traffic (reconcile/gates.py)."""

from __future__ import annotations

from typing import Any

import pytest
from triton_operator.api.tritonmodel import ReplicaState
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.observe.model import ReplicaFacts
from triton_operator.observe.server import GateChange, gate_change, triton_started_after_gate
from triton_operator.observe.staging import StagedRecord
from triton_operator.reconcile.gates import model_settled_on
from triton_operator.reconcile.loading import (
    RETRY_FAILED_LOAD_S,
    RETRY_LOCAL_FAILED_LOAD_S,
    retry_failed_load_after,
    settle,
)
from triton_operator.reconcile.state import ModelMemory
from triton_operator.render.labels import MODELS_LOADED_GATE
from triton_operator.render.server import render_deployment, wants_models_gate

pytestmark = pytest.mark.unit

UP = {"has_gate": True, "triton_up": True, "restarts": 0, "granted_at_restarts": None, "loaded": 2}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # A pod of an older template has no gate: Kubernetes does not wait for it.
        ({**UP, "has_gate": False, "gate": None, "waiting_for": []}, None),
        # A new pod whose Triton does not answer yet: its containers hold it back, nothing to write.
        ({**UP, "triton_up": False, "gate": None, "waiting_for": ["a"]}, None),
        # Triton answers, two models still to load: said once ...
        (
            {**UP, "gate": None, "waiting_for": ["a", "b"]},
            GateChange("False", "LoadingModels", "Loading 2 models: a, b."),
        ),
        # ... and not rewritten while they load one by one.
        ({**UP, "gate": "False", "waiting_for": ["b"]}, None),
        # Every model loaded (or refused by Triton): the pod takes traffic.
        ({**UP, "gate": "False", "waiting_for": []}, GateChange("True", "ModelsLoaded", "2 models loaded.")),
        (
            {**UP, "gate": None, "waiting_for": [], "loaded": 0},
            GateChange("True", "ModelsLoaded", "No model to load."),
        ),
        # Open and Triton still the same process: left alone (models added later are hot-loaded).
        ({**UP, "gate": "True", "waiting_for": [], "granted_at_restarts": 0}, None),
        # Triton stopped answering (crashed, restarting): closed before it answers again without models.
        (
            {**UP, "triton_up": False, "gate": "True", "waiting_for": []},
            GateChange("False", "TritonNotReady", "Triton stopped answering; its models load again."),
        ),
        # Restarted between two looks (the not-ready moment missed): closed all the same.
        (
            {**UP, "gate": "True", "waiting_for": [], "restarts": 1, "granted_at_restarts": 0},
            GateChange("False", "TritonRestarted", "Triton restarted (1 restarts); loading."),
        ),
        # Opened by an earlier operator process, Triton started before the gate opened: trusted.
        ({**UP, "gate": "True", "waiting_for": [], "restarts": 3}, None),
        # ... Triton started after it (restarted while no operator ran: it lost its models): closed.
        (
            {**UP, "gate": "True", "waiting_for": [], "restarts": 3, "started_after_gate": True},
            GateChange("False", "TritonRestarted", "Triton restarted (3 restarts); loading."),
        ),
        # Opened by this process at this very Triton: its restart count decides, not the clocks.
        (
            {**UP, "gate": "True", "waiting_for": [], "granted_at_restarts": 0, "started_after_gate": True},
            None,
        ),
    ],
)
def test_gate_change(facts: dict[str, Any], expected: GateChange | None) -> None:
    assert gate_change(**facts) == expected


def test_a_long_wait_names_the_first_models_and_counts_the_rest() -> None:
    change = gate_change(**{**UP, "gate": None, "waiting_for": [f"m{i}" for i in range(8)]})
    assert change is not None
    assert change.message == "Loading 8 models: m0, m1, m2, m3, m4 and 3 more."


STAGED = StagedRecord("m-stage-1", 1, "sha256:x")


@pytest.mark.parametrize(
    ("memory", "status", "settled"),
    [
        # Not passed by this process yet: holds back only if its status says files were staged.
        (None, {}, True),
        (None, {"stagedDigest": "sha256:x"}, False),
        # Nothing staged yet (its first staging runs): nothing to load, nothing to wait for.
        (ModelMemory(), {}, True),
        # Staged, loaded into this Triton (restart count 0): settled; into an earlier process: not.
        (ModelMemory(staged=STAGED, settled={"uid-1": 0}), {}, True),
        (ModelMemory(staged=STAGED, settled={"uid-2": 0}), {}, False),
    ],
)
def test_model_settled_on(memory: ModelMemory | None, status: dict[str, Any], settled: bool) -> None:
    assert model_settled_on(memory, status, "uid-1", 0) is settled


def test_a_restarted_triton_waits_for_models_loaded_before_its_restart() -> None:
    memory = ModelMemory(staged=STAGED, settled={"uid-1": 0})
    assert not model_settled_on(memory, {}, "uid-1", 1)


def _pod(uid: str, restarts: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{uid}", "uid": uid},
        "status": {"containerStatuses": [{"name": "tritonserver", "restartCount": restarts}]},
    }


def _fact(pod: str, **kw: Any) -> ReplicaFacts:
    return ReplicaFacts(pod, "10.244.1.2", kw.pop("up", True), kw.pop("state", ReplicaState.READY), **kw)


def test_settle_notes_refused_pods_not_loading_or_down_ones() -> None:
    memory = ModelMemory(staged=STAGED)
    pods = [_pod("a"), _pod("b", restarts=2), _pod("c"), _pod("d")]
    facts = [
        _fact("p-a", state=ReplicaState.LOADING),
        _fact("p-b", state=ReplicaState.UNAVAILABLE, load_error="bad config"),
        _fact("p-c", state=ReplicaState.LOADING),
        _fact("p-d", up=False, state=ReplicaState.PENDING),
    ]
    settle(memory, pods, facts, needs_router=False)
    assert memory.settled == {"b": 2}
    assert memory.settled_news


def test_a_pod_that_refused_files_another_pod_serves_is_not_settled() -> None:
    memory = ModelMemory(staged=STAGED)
    settle(
        memory,
        [_pod("a"), _pod("b")],
        [
            _fact("p-a", current=True),
            _fact("p-b", state=ReplicaState.UNAVAILABLE, load_error="out of memory"),
        ],
        needs_router=False,
    )
    assert memory.settled == {"a": 0}


@pytest.mark.parametrize(
    ("loads", "after"),
    [
        ({}, RETRY_FAILED_LOAD_S),  # refused everywhere so far: the files' fault
        ({"b": STAGED.job}, RETRY_LOCAL_FAILED_LOAD_S),  # served by pod b: pod a's own problem
        ({"a": STAGED.job}, RETRY_FAILED_LOAD_S),  # its own earlier load does not count
        ({"b": "m-stage-0"}, RETRY_FAILED_LOAD_S),  # older files on b say nothing about these
    ],
)
def test_a_failed_load_is_retried_sooner_when_another_pod_serves_the_files(
    loads: dict[str, str], after: float
) -> None:
    assert retry_failed_load_after(ModelMemory(staged=STAGED, loads=loads), "a", STAGED.job) == after


def test_a_routed_model_is_settled_only_with_its_router_on_the_pod() -> None:
    memory = ModelMemory(staged=STAGED)
    memory.routing.routers["b"] = ((), "")
    settle(
        memory,
        [_pod("a"), _pod("b")],
        [_fact("p-a", current=True), _fact("p-b", current=True)],
        needs_router=True,
    )
    assert memory.settled == {"b": 0}


def test_settling_again_is_no_news() -> None:
    memory = ModelMemory(staged=STAGED, settled={"a": 0})
    settle(memory, [_pod("a")], [_fact("p-a", current=True)], needs_router=False)
    assert not memory.settled_news


def _server_spec(**extra: Any) -> TritonServerSpec:
    return TritonServerSpec.model_validate(
        {"replicas": 2, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}, **extra}
    )


@pytest.mark.parametrize(
    ("running", "spec", "gate"),
    [
        # A new server: its pods have the gate from the start.
        (None, _server_spec(), True),
        # Pods that have it keep it.
        (render_deployment("t", "ns", _server_spec(), owner_labels={}), _server_spec(), True),
        # Pods an older operator started without it, running this very spec: not rolled for it ...
        (
            render_deployment("t", "ns", _server_spec(), owner_labels={}, models_gate=False),
            _server_spec(),
            False,
        ),
        # ... until the server changes anyway: the same roll adds it.
        (
            render_deployment("t", "ns", _server_spec(), owner_labels={}, models_gate=False),
            _server_spec(env=[{"name": "X", "value": "1"}]),
            True,
        ),
    ],
)
def test_an_operator_upgrade_does_not_roll_pods_for_the_gate(
    running: dict[str, Any] | None, spec: TritonServerSpec, gate: bool
) -> None:
    assert wants_models_gate("t", spec, running) is gate


def _gated_pod(opened: str | None, started: str | None, gate: str = "True") -> dict[str, Any]:
    conditions = (
        [] if opened is None else [{"type": MODELS_LOADED_GATE, "status": gate, "lastTransitionTime": opened}]
    )
    state = {"running": {"startedAt": started}} if started else {"waiting": {"reason": "CrashLoopBackOff"}}
    return {
        "metadata": {"name": "p", "uid": "u"},
        "status": {
            "conditions": conditions,
            "containerStatuses": [{"name": "tritonserver", "restartCount": 1, "state": state}],
        },
    }


@pytest.mark.parametrize(
    ("pod", "after"),
    [
        # The gate opened once models were loaded into the running Triton: after its start.
        (_gated_pod("2026-12-01T10:00:09Z", "2026-12-01T10:00:02Z"), False),
        # Whole seconds: a start in the second of the opening (or the next) is not surely later.
        (_gated_pod("2026-12-01T10:00:09Z", "2026-12-01T10:00:10Z"), False),
        # Triton started again 40 s after the gate opened: it has lost its models.
        (_gated_pod("2026-12-01T10:00:09Z", "2026-12-01T10:00:49Z"), True),
        # Not open, no gate condition yet, or no Triton running: nothing to compare.
        (_gated_pod("2026-12-01T10:00:09Z", "2026-12-01T10:00:49Z", gate="False"), False),
        (_gated_pod(None, "2026-12-01T10:00:49Z"), False),
        (_gated_pod("2026-12-01T10:00:09Z", None), False),
    ],
    ids=["started-before", "same-second", "restarted-after", "gate-closed", "no-gate-yet", "not-running"],
)
def test_triton_started_after_gate(pod: dict[str, Any], after: bool) -> None:
    assert triton_started_after_gate(pod) is after
