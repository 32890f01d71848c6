"""Argo CD health scripts run by a real Lua 5.1 interpreter (Argo CD runs them on gopher-lua, Lua 5.1)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from lupa import lua51

from tests.support.argocd import ARGOCD, PATCH, SCRIPTS

pytestmark = pytest.mark.unit


def health(kind: str, obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Run the kind's script (or `script`) as Argo CD does: a chunk with global `obj` returning a table."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert runtime.lua_version == (5, 1)
    # Argo CD exposes only a few standard libraries to health scripts; the scripts must not need others.
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        runtime.execute(f"{name} = nil")
    runtime.globals()["obj"] = runtime.table_from(obj, recursive=True)
    result: Any = runtime.execute(script if script is not None else (ARGOCD / SCRIPTS[kind]).read_text())
    assert set(result.keys()) == {"status", "message"}
    return {"status": str(result["status"]), "message": str(result["message"])}


def condition(
    type_: str, status: str, message: str, observed: int | None = 3, reason: str = "Reason"
) -> dict[str, Any]:
    """A metav1.Condition as the operator writes it."""
    written: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
    if observed is not None:
        written["observedGeneration"] = observed
    return written


def resource(kind: str, generation: int = 3, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object of the kind as Argo CD reads it from the cluster."""
    obj: dict[str, Any] = {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "llm", "namespace": "serving", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


def status(
    *conditions: dict[str, Any],
    observed: int | None = 3,
    rollout: dict[str, Any] | None = None,
    traffic: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    written: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        written["observedGeneration"] = observed
    if rollout is not None:
        written["rollout"] = rollout
    if traffic is not None:
        written["traffic"] = traffic
    return written


def rollout(phase: str, reason: str, message: str, **fields: Any) -> dict[str, Any]:
    """A TritonModel's status.rollout as the operator writes it: canary version 2 against 1, in 4 steps."""
    written: dict[str, Any] = {
        "phase": phase,
        "stableVersion": "1",
        "canaryVersion": "2",
        "stepIndex": 1,
        "steps": 4,
        "canaryWeight": 25,
        "stepStartedAt": "2025-01-01T00:05:00Z",
        "nextDecisionAt": "2025-01-01T00:06:00Z",
        "reason": reason,
        "message": message,
        "lastVerdict": "Successful",
        "lastVerdictMessage": "error rate 0.4% <= 5%, p99 latency 120ms <= 250ms",
    }
    written.update(fields)
    return written


def traffic(*shares: tuple[str, str, int]) -> list[dict[str, Any]]:
    """status.traffic: (version, role, percent) each, observed as desired."""
    return [
        {"version": version, "role": role, "desiredWeight": weight, "observedShare": weight / 100}
        for version, role, weight in shares
    ]


READY = condition("Ready", "True", "2/2 replicas ready, 3 models loaded")
NOT_READY = condition("Ready", "False", "1/2 replicas ready")
PROGRESSING = condition("Progressing", "True", "Rolling out: 1 of 2 pods updated")
NOT_PROGRESSING = condition("Progressing", "False", "Up to date")
DEGRADED = condition("Degraded", "True", "Staging job failed: s3://models/llm not found")
NOT_DEGRADED = condition("Degraded", "False", "No failures")

CASES: dict[str, tuple[dict[str, Any] | None, int, str, str]] = {
    # name: (status, metadata.generation, expected health, expected message)
    "no status": (None, 1, "Progressing", "Waiting for the operator to observe generation 1"),
    "status without observedGeneration": (
        status(READY, observed=None),
        2,
        "Progressing",
        "Waiting for the operator to observe generation 2",
    ),
    "generation mismatch": (
        status(READY, NOT_DEGRADED, observed=2),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "generation mismatch hides an old degradation": (
        status(DEGRADED, observed=2),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "condition observedGeneration stale": (
        status(condition("Ready", "True", "ready", observed=2), NOT_DEGRADED),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "progressing": (
        status(NOT_READY, PROGRESSING, NOT_DEGRADED),
        3,
        "Progressing",
        "Rolling out: 1 of 2 pods updated",
    ),
    "healthy": (
        status(READY, NOT_PROGRESSING, NOT_DEGRADED),
        3,
        "Healthy",
        "2/2 replicas ready, 3 models loaded",
    ),
    "degraded": (
        status(NOT_READY, NOT_PROGRESSING, DEGRADED),
        3,
        "Degraded",
        "Staging job failed: s3://models/llm not found",
    ),
    "degraded wins over ready": (status(READY, DEGRADED), 3, "Degraded", DEGRADED["message"]),
    "ready wins over progressing": (status(READY, PROGRESSING), 3, "Healthy", READY["message"]),
    "not ready, nothing progressing": (
        status(NOT_READY, NOT_PROGRESSING),
        3,
        "Progressing",
        "1/2 replicas ready",
    ),
    "no conditions yet": (status(), 3, "Progressing", "Waiting for {kind} to become Ready"),
    "degraded without a message uses its reason": (
        status(condition("Degraded", "True", "", reason="ModelLoadFailed")),
        3,
        "Degraded",
        "ModelLoadFailed",
    ),
    "conditions without observedGeneration count as current": (
        status(condition("Ready", "True", "ready", observed=None)),
        3,
        "Healthy",
        "ready",
    ),
}


ROLLING_OUT = condition("Progressing", "True", "Canary version 2 at step 2/4", reason="RolloutProgressing")
HOLDING = condition("Progressing", "True", "Canary version 2 held at step 2/4", reason="RolloutInconclusive")
ROLLED_BACK = condition("Degraded", "True", "Rolled back to version 1", reason="RolledBack")
EXPERIMENTING = condition("Progressing", "True", "A/B experiment running", reason="ExperimentRunning")
RUNNING = rollout(
    "Progressing",
    "AnalysisPassing",
    "step 2/4 (25%): canary passing, advances at 2025-01-01T00:10:00Z; "
    "error rate 0.4% <= 5%, p99 latency 120ms <= 250ms",
)
INCONCLUSIVE = rollout(
    "Progressing",
    "AnalysisInconclusive",
    "step 2/4 (25%): holding, 12 requests < 100 needed; next decision at 2025-01-01T00:06:00Z",
    lastVerdict="Inconclusive",
    lastVerdictMessage="12 requests < 100 needed",
)
PROMOTED = rollout(
    "Promoted",
    "Promoted",
    "promoted version 2 (stable was 1) after step 4/4 (100%) passed: error rate 0.3% <= 5%",
    stepIndex=3,
    canaryWeight=100,
)
ROLLBACK_MESSAGE = "rolled back to version 1 at step 2/4 (25%): error rate 7.5% > 5% over 480 requests"
ROLLBACK = rollout(
    "RolledBack",
    "RolledBack",
    ROLLBACK_MESSAGE,
    canaryWeight=0,
    lastVerdict="Failed",
    lastVerdictMessage="error rate 7.5% > 5% over 480 requests",
)
ABORT_MESSAGE = "aborted by command 'stop-1' at step 2/4 (25%): 100% to stable version 1"
ABORT = rollout("Aborted", "AbortedByCommand", ABORT_MESSAGE, canaryWeight=0)
RETRIED = rollout(
    "Progressing",
    "Retried",
    "retrying canary version 2 by command 'retry-1': step 1/4 (10%), next decision at 2025-01-01T00:07:00Z",
    stepIndex=0,
    canaryWeight=10,
)
CANARY_TRAFFIC = traffic(("1", "stable", 75), ("2", "canary", 25))
STABLE_TRAFFIC = traffic(("1", "stable", 100))
EXPERIMENT_TRAFFIC = traffic(("1", "variant", 50), ("2", "variant", 50))

# Only a TritonModel has status.rollout and status.traffic.
ROLLOUT_CASES: dict[str, tuple[dict[str, Any] | None, int, str, str]] = {
    # name: (status, metadata.generation, expected health, expected message)
    "rollout progressing while the stable version serves": (
        status(READY, ROLLING_OUT, NOT_DEGRADED, rollout=RUNNING, traffic=CANARY_TRAFFIC),
        3,
        "Progressing",
        RUNNING["message"],
    ),
    "rollout holding on an inconclusive step": (
        status(READY, HOLDING, NOT_DEGRADED, rollout=INCONCLUSIVE, traffic=CANARY_TRAFFIC),
        3,
        "Progressing",
        INCONCLUSIVE["message"],
    ),
    "rollout progressing before Ready": (
        status(NOT_READY, ROLLING_OUT, rollout=RUNNING, traffic=CANARY_TRAFFIC),
        3,
        "Progressing",
        RUNNING["message"],
    ),
    "rollout promoted": (
        status(READY, NOT_PROGRESSING, NOT_DEGRADED, rollout=PROMOTED, traffic=traffic(("2", "stable", 100))),
        3,
        "Healthy",
        READY["message"],
    ),
    "rollout promoted but not ready": (
        status(NOT_READY, NOT_PROGRESSING, NOT_DEGRADED, rollout=PROMOTED),
        3,
        "Progressing",
        NOT_READY["message"],
    ),
    "canary withdrawn by a revert of the spec to the stable version": (
        status(
            READY,
            NOT_PROGRESSING,
            NOT_DEGRADED,
            rollout=rollout("Aborted", "CanaryWithdrawn", "", canaryWeight=0),
        ),
        3,
        "Healthy",
        READY["message"],
    ),
    "rolled back although ready": (
        status(READY, NOT_PROGRESSING, ROLLED_BACK, rollout=ROLLBACK, traffic=STABLE_TRAFFIC),
        3,
        "Degraded",
        ROLLBACK_MESSAGE,
    ),
    "rolled back, Degraded condition not yet written": (
        status(READY, NOT_PROGRESSING, NOT_DEGRADED, rollout=ROLLBACK, traffic=STABLE_TRAFFIC),
        3,
        "Degraded",
        ROLLBACK_MESSAGE,
    ),
    "rollback message wins over another degradation": (
        status(NOT_READY, DEGRADED, rollout=ROLLBACK),
        3,
        "Degraded",
        ROLLBACK_MESSAGE,
    ),
    "aborted although ready": (
        status(READY, NOT_PROGRESSING, NOT_DEGRADED, rollout=ABORT, traffic=STABLE_TRAFFIC),
        3,
        "Degraded",
        ABORT_MESSAGE,
    ),
    "rolled back without a message: built from the rollout": (
        status(
            READY,
            ROLLED_BACK,
            rollout=rollout(
                "RolledBack",
                "RolledBack",
                "",
                canaryWeight=0,
                lastVerdictMessage="error rate 7.5% > 5% over 480 requests",
            ),
        ),
        3,
        "Degraded",
        "Rolled back canary version 2 against stable 1 at step 2/4 (canary 0%), RolledBack: "
        "error rate 7.5% > 5% over 480 requests",
    ),
    "aborted without a message: built from the rollout": (
        status(
            READY, rollout=rollout("Aborted", "AbortedByCommand", "", canaryWeight=0, lastVerdictMessage="")
        ),
        3,
        "Degraded",
        "Aborted canary version 2 against stable 1 at step 2/4 (canary 0%), AbortedByCommand",
    ),
    "progressing without a message: built from the rollout": (
        status(READY, ROLLING_OUT, rollout=rollout("Progressing", "", "", lastVerdictMessage="")),
        3,
        "Progressing",
        "Rolling out canary version 2 against stable 1 at step 2/4 (canary 25%)",
    ),
    "another degradation wins over a running rollout": (
        status(READY, ROLLING_OUT, DEGRADED, rollout=RUNNING, traffic=CANARY_TRAFFIC),
        3,
        "Degraded",
        DEGRADED["message"],
    ),
    "a retried rollout progresses despite the rollback's Degraded condition": (
        status(READY, ROLLING_OUT, ROLLED_BACK, rollout=RETRIED, traffic=traffic(("1", "stable", 90))),
        3,
        "Progressing",
        RETRIED["message"],
    ),
    "promoted after a rollback is healthy despite the rollback's Degraded condition": (
        status(
            READY,
            NOT_PROGRESSING,
            ROLLED_BACK,
            rollout=rollout("Promoted", "PromotedByCommand", "promoted version 2 by command 'go-1'"),
        ),
        3,
        "Healthy",
        READY["message"],
    ),
    "RolledBack Degraded condition without a rollout status still degrades": (
        status(READY, ROLLED_BACK),
        3,
        "Degraded",
        ROLLED_BACK["message"],
    ),
    "experiment running": (
        status(READY, NOT_PROGRESSING, NOT_DEGRADED, traffic=EXPERIMENT_TRAFFIC),
        3,
        "Healthy",
        READY["message"],
    ),
    "experiment running, Progressing=True": (
        status(READY, EXPERIMENTING, NOT_DEGRADED, traffic=EXPERIMENT_TRAFFIC),
        3,
        "Healthy",
        READY["message"],
    ),
    "experiment after a promoted rollout": (
        status(READY, NOT_PROGRESSING, NOT_DEGRADED, rollout=PROMOTED, traffic=EXPERIMENT_TRAFFIC),
        3,
        "Healthy",
        READY["message"],
    ),
    "experiment not ready yet": (
        status(NOT_READY, PROGRESSING, NOT_DEGRADED, traffic=EXPERIMENT_TRAFFIC),
        3,
        "Progressing",
        PROGRESSING["message"],
    ),
    "experiment degraded": (
        status(READY, DEGRADED, traffic=EXPERIMENT_TRAFFIC),
        3,
        "Degraded",
        DEGRADED["message"],
    ),
    "rollout status without a phase is ignored": (
        status(READY, NOT_DEGRADED, rollout={}),
        3,
        "Healthy",
        READY["message"],
    ),
    "generation mismatch hides a rollback": (
        status(READY, ROLLED_BACK, rollout=ROLLBACK, observed=2),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "generation mismatch hides an abort": (
        status(READY, rollout=ABORT, observed=2),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "generation mismatch hides a running rollout's message": (
        status(READY, ROLLING_OUT, rollout=RUNNING, observed=2),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "generation mismatch hides a promotion": (
        status(READY, NOT_DEGRADED, rollout=PROMOTED, observed=2),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    "stale condition observedGeneration hides a rollback": (
        status(condition("Ready", "True", "ready", observed=2), ROLLED_BACK, rollout=ROLLBACK),
        3,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
}


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
@pytest.mark.parametrize("case", list(CASES))
def test_health(kind: str, case: str) -> None:
    written, generation, expected_status, expected_message = CASES[case]
    result = health(kind, resource(kind, generation, written))
    assert result == {"status": expected_status, "message": expected_message.format(kind=kind)}


@pytest.mark.parametrize("case", list(ROLLOUT_CASES))
def test_rollout_health(case: str) -> None:
    written, generation, expected_status, expected_message = ROLLOUT_CASES[case]
    result = health("TritonModel", resource("TritonModel", generation, written))
    assert result == {"status": expected_status, "message": expected_message}


def test_patch_names_no_namespace() -> None:
    """Kustomize matches a patch to a resource before `namespace:` applies; Argo CD's argocd-cm has none."""
    patch = yaml.safe_load(PATCH.read_text())
    assert patch["apiVersion"] == "v1" and patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert "namespace" not in patch["metadata"]


def test_patch_health_scripts_run() -> None:
    """What Argo CD runs is the text under data, not health.lua: it too reads both kinds."""
    data = yaml.safe_load(PATCH.read_text())["data"]
    for kind in SCRIPTS:
        script = data[f"resource.customizations.health.tritonoperator.dev_{kind}"]
        written = status(READY, NOT_DEGRADED, rollout=ROLLBACK)
        result = health(kind, resource(kind, 3, written), script)
        assert result == {"status": "Degraded", "message": ROLLBACK_MESSAGE}
