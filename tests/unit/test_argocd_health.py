"""Argo CD health scripts run by a real Lua 5.1 interpreter (Argo CD runs them on gopher-lua, Lua 5.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import lua51

pytestmark = pytest.mark.unit

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
SCRIPTS = {"TritonServer": "health.lua", "TritonModel": "health.lua"}


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run the kind's script as Argo CD does: a chunk with global `obj` that returns {status, message}."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    assert runtime.lua_version == (5, 1)
    # Argo CD exposes only a few standard libraries to health scripts; the scripts must not need others.
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        runtime.execute(f"{name} = nil")
    runtime.globals()["obj"] = runtime.table_from(obj, recursive=True)
    result: Any = runtime.execute((ARGOCD / SCRIPTS[kind]).read_text())
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


def status(*conditions: dict[str, Any], observed: int | None = 3) -> dict[str, Any]:
    written: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        written["observedGeneration"] = observed
    return written


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


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
@pytest.mark.parametrize("case", list(CASES))
def test_health(kind: str, case: str) -> None:
    written, generation, expected_status, expected_message = CASES[case]
    result = health(kind, resource(kind, generation, written))
    assert result == {"status": expected_status, "message": expected_message.format(kind=kind)}
