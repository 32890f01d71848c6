"""The per-object gauges the alerts read: what each body exports, and series replaced, not piled up."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from triton_operator.opmetrics_objects import MODEL, SERVER, ObjectGauges, Sample, object_samples

pytestmark = pytest.mark.unit


def server(replicas: int | None, ready: int | None, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    status: dict[str, Any] = {"conditions": conditions}
    if ready is not None:
        status["readyReplicas"] = ready
    return {"metadata": {"namespace": "serving", "name": "pool"}, "spec": spec, "status": status}


def model(states: list[str], rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"replicas": [{"pod": f"p{i}", "state": s} for i, s in enumerate(states)]}
    if rollout is not None:
        status["rollout"] = rollout
    return {
        "metadata": {"namespace": "serving", "name": "adder"},
        "spec": {"server": "pool"},
        "status": status,
    }


def values(samples: list[Sample], gauge: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in samples if s.gauge == gauge}


SERVER_LABELS = (("namespace", "serving"), ("tritonserver", "pool"))


@pytest.mark.parametrize(
    ("body", "spec_replicas", "ready"),
    [
        (server(3, 2, []), 3.0, 2.0),
        (server(None, None, []), 1.0, 0.0),  # the spec's default, a status not written yet
        (server(0, 0, []), 0.0, 0.0),
    ],
    ids=["short-one", "defaults", "scaled-to-zero"],
)
def test_server_replicas(body: dict[str, Any], spec_replicas: float, ready: float) -> None:
    samples = object_samples(SERVER, body)
    assert values(samples, "triton_operator_tritonserver_spec_replicas") == {SERVER_LABELS: spec_replicas}
    assert values(samples, "triton_operator_tritonserver_status_ready_replicas") == {SERVER_LABELS: ready}


def test_server_conditions_one_series_each_with_status_and_reason() -> None:
    body = server(
        1,
        1,
        [{"type": "Ready", "status": "True", "reason": "Ready"}, {"type": "Degraded", "status": "False"}],
    )
    got = values(object_samples(SERVER, body), "triton_operator_tritonserver_condition")
    assert got == {
        (*SERVER_LABELS, ("type", "Ready"), ("status", "True"), ("reason", "Ready")): 1.0,
        (*SERVER_LABELS, ("type", "Degraded"), ("status", "False"), ("reason", "")): 1.0,
    }


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["READY", "READY"], {"READY": 2, "LOADING": 0, "UNAVAILABLE": 0, "UNLOADED": 0, "PENDING": 0}),
        (
            ["READY", "UNAVAILABLE", "LOADING"],
            {"READY": 1, "LOADING": 1, "UNAVAILABLE": 1, "UNLOADED": 0, "PENDING": 0},
        ),
        ([], {"READY": 0, "LOADING": 0, "UNAVAILABLE": 0, "UNLOADED": 0, "PENDING": 0}),
        (["SOMETHING-NEW"], {"READY": 0, "LOADING": 0, "UNAVAILABLE": 0, "UNLOADED": 0, "PENDING": 0}),
    ],
    ids=["everywhere", "mixed", "none-yet", "unknown-state-ignored"],
)
def test_model_replicas_by_state(states: list[str], expected: dict[str, int]) -> None:
    got = values(object_samples(MODEL, model(states)), "triton_operator_tritonmodel_replicas")
    own = (("namespace", "serving"), ("tritonmodel", "adder"), ("tritonserver", "pool"))
    assert got == {(*own, ("state", state)): float(count) for state, count in expected.items()}


@pytest.mark.parametrize(
    ("rollout", "phase", "verdict"),
    [
        (None, None, None),
        ({"phase": "Progressing", "canaryVersion": "2"}, ("Progressing", "2"), None),
        (
            {"phase": "Progressing", "canaryVersion": "2", "lastVerdict": "Inconclusive"},
            ("Progressing", "2"),
            "Inconclusive",
        ),
        (
            {"phase": "RolledBack", "canaryVersion": "2", "lastVerdict": "Failed"},
            ("RolledBack", "2"),
            "Failed",
        ),
    ],
    ids=["no-rollout", "progressing", "inconclusive", "rolled-back"],
)
def test_model_rollout(
    rollout: dict[str, Any] | None, phase: tuple[str, str] | None, verdict: str | None
) -> None:
    samples = object_samples(MODEL, model(["READY"], rollout))
    own = (("namespace", "serving"), ("tritonmodel", "adder"))
    phases = values(samples, "triton_operator_tritonmodel_rollout_phase")
    verdicts = values(samples, "triton_operator_tritonmodel_rollout_verdict")
    assert phases == (
        {} if phase is None else {(*own, ("phase", phase[0]), ("canary_version", phase[1])): 1.0}
    )
    assert verdicts == ({} if verdict is None else {(*own, ("verdict", verdict)): 1.0})


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_a_changed_condition_replaces_its_series() -> None:
    registry = CollectorRegistry()
    gauges = ObjectGauges(registry)
    gauges.observe(SERVER, server(1, 0, [{"type": "Ready", "status": "False", "reason": "PodsNotReady"}]))
    gauges.observe(SERVER, server(1, 1, [{"type": "Ready", "status": "True", "reason": "Ready"}]))
    text = exposition(registry)
    assert 'reason="Ready"' in text
    assert "PodsNotReady" not in text


def test_a_rollout_that_ended_leaves_no_phase_behind() -> None:
    registry = CollectorRegistry()
    gauges = ObjectGauges(registry)
    gauges.observe(
        MODEL, model(["READY"], {"phase": "Progressing", "canaryVersion": "2", "lastVerdict": "Successful"})
    )
    gauges.observe(MODEL, model(["READY"]))
    text = exposition(registry)
    assert "rollout_phase{" not in text and "rollout_verdict{" not in text


def test_forget_removes_every_series_of_the_object_only() -> None:
    registry = CollectorRegistry()
    gauges = ObjectGauges(registry)
    gauges.observe(SERVER, server(2, 2, [{"type": "Ready", "status": "True", "reason": "Ready"}]))
    other = server(1, 1, [])
    other["metadata"]["name"] = "other"
    gauges.observe(SERVER, other)
    gauges.passed(SERVER, "serving", "pool", when=100.0)
    gauges.forget(SERVER, "serving", "pool")
    text = exposition(registry)
    assert 'tritonserver="pool"' not in text and 'name="pool"' not in text
    assert 'tritonserver="other"' in text


def test_passed_records_the_time_and_survives_new_bodies() -> None:
    registry = CollectorRegistry()
    gauges = ObjectGauges(registry)
    gauges.passed(MODEL, "serving", "adder", when=1234.0)
    gauges.observe(MODEL, model(["READY"]))
    assert (
        registry.get_sample_value(
            "triton_operator_object_last_pass_timestamp_seconds",
            {"namespace": "serving", "kind": "TritonModel", "name": "adder"},
        )
        == 1234.0
    )
