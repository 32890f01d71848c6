"""Reading Triton's own words out of a crashed container's last log lines; pods held for their claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from triton_operator.conditions import CLAIM_BIND_GRACE_S
from triton_operator.observe.server import (
    MAX_ERROR_CHARS,
    claim_binding,
    observe_pod,
    triton_errors,
    waits_for_claim,
)

TAIL = """| exit_timeout                     | 30 |
+----------------------------------+----+

I1123 18:56:54.773271 12121 server.cc:305] "Waiting for in-flight requests to complete."
E1123 18:57:00.083563 12146 model_repository_manager.cc:1415] "failed to poll model 'm': model not found"
error: creating server: Internal - failed to load all models
"""


def test_keeps_glog_errors_and_the_final_error_line_only() -> None:
    assert triton_errors(TAIL) == (
        "failed to poll model 'm': model not found; creating server: Internal - failed to load all models"
    )


@pytest.mark.parametrize("tail", ["", 'I1123 12:00:00.000000 1 server.cc:1] "ok"\n+---+\n'])
def test_nothing_to_say_without_errors(tail: str) -> None:
    assert triton_errors(tail) == ""


def test_repeats_collapse_and_long_text_is_cut() -> None:
    line = "error: " + "x" * 1000
    assert triton_errors(f"{line}\n{line}\n") == "x" * (MAX_ERROR_CHARS - 1) + "…"


UNBOUND = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: no."
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def _unschedulable_pod(message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "llm-a"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ],
        },
    }


@pytest.mark.parametrize(
    ("message", "waits"),
    [(UNBOUND, True), ("0/4 nodes are available: 4 Insufficient nvidia.com/gpu.", False)],
)
def test_a_pod_held_only_for_its_claims_is_told_apart(message: str, waits: bool) -> None:
    pod = observe_pod(_unschedulable_pod(message), None)
    assert pod.unschedulable_message == message
    assert pod.waits_for_claim is waits
    assert waits_for_claim([_unschedulable_pod(message)]) is waits


def _claim(phase: str | None, age_s: float | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "llm-models"}
    if age_s is not None:
        meta["creationTimestamp"] = (NOW - timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": meta, "status": {"phase": phase} if phase else {}}


@pytest.mark.parametrize(
    ("claim", "binding"),
    [
        (None, False),  # no claim: not binding (a missing existingClaim is its own problem)
        (_claim("Pending", 1), True),
        (_claim(None, 1), True),  # no status yet: just created
        (_claim("Pending", CLAIM_BIND_GRACE_S + 1), False),  # past the grace: a problem, not start-up
        # Bound since the scheduler judged the pod: it retries at once (Argo CD saw a 0.1 s Degraded).
        (_claim("Bound", 1), True),
        (_claim("Bound", CLAIM_BIND_GRACE_S + 1), True),
        (_claim("Lost", 1), False),
        (_claim("Pending", None), True),
    ],
)
def test_claim_binding_is_a_young_pending_or_a_bound_claim(
    claim: dict[str, Any] | None, binding: bool
) -> None:
    assert claim_binding(claim, NOW) is binding


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _container(state: str, restarts: int, exit_code: int | None, ended_s_ago: float, ready: bool) -> Any:
    last = (
        {"terminated": {"exitCode": exit_code, "finishedAt": _stamp(NOW - timedelta(seconds=ended_s_ago))}}
        if exit_code is not None
        else {}
    )
    states = {"running": {"running": {}}, "backoff": {"waiting": {"reason": "CrashLoopBackOff"}}}
    return {
        "name": "tritonserver",
        "ready": ready,
        "restartCount": restarts,
        "state": states[state],
        "lastState": last,
    }


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("container", "looping"),
    [
        (_container("backoff", 3, 1, 5, False), True),  # the kubelet says so
        (_container("running", 3, 1, 5, False), True),  # between back-offs: started again, not ready
        (_container("running", 3, 1, 5, True), False),  # came up this time
        (_container("running", 3, 0, 5, False), False),  # its last run ended cleanly
        (_container("running", 1, 137, 5, False), True),  # killed (OOM), restarted at once, not up yet
        (_container("running", 0, None, 0, False), False),  # a first start
        (_container("running", 3, 1, 900, False), False),  # crashed long ago (the kubelet forgot too)
    ],
)
def test_a_crash_loop_stays_one_between_its_back_offs(container: dict[str, Any], looping: bool) -> None:
    pod = {"metadata": {"name": "p"}, "status": {"containerStatuses": [container]}}
    assert observe_pod(pod, None, NOW).crash_looping is looping
