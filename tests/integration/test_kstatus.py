"""kstatus itself (sigs.k8s.io/cli-utils v0.37.2, what Flux, kpt and cli-utils judge objects with) reads
both kinds right in every state: Current when served, InProgress while work goes on, Failed when only a
change to the spec (or an object it names) can help.

The objects are the ones the operator writes in each state (tests/support/kstatus_states.py builds them
with its own status functions); tests/support/kstatus/main.go runs kstatus's status.Compute on them. It is
built once (a minute on 2 cores with an empty Go module cache) into
${XDG_CACHE_HOME:-~/.cache}/triton-operator-sandbox/kstatus-v0.37.2/.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import kstatus_check
from tests.support.kstatus_check import KstatusUnavailable
from tests.support.kstatus_states import KState, all_states, kstatus_rules

pytestmark = pytest.mark.integration


def compute(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    try:
        return kstatus_check.compute(objects)
    except KstatusUnavailable as exc:
        if str(exc).startswith("Go is not installed"):
            pytest.skip(str(exc))
        raise


@pytest.fixture(scope="module")
def states() -> list[KState]:
    return all_states()


def table(states: list[KState], verdicts: list[dict[str, str]]) -> str:
    rows = [f"{'state':55} {'kstatus':10} {'Reconciling':11} {'Stalled':7} message"]
    for state, verdict in zip(states, verdicts, strict=True):
        conditions = {c["type"]: c["status"] for c in state.obj["status"]["conditions"]}
        rows.append(
            f"{state.name:55} {verdict.get('status', verdict.get('error', '')):10} "
            f"{conditions.get('Reconciling', ''):11} {conditions.get('Stalled', ''):7} "
            f"{verdict.get('message', '')[:100]}"
        )
    return "\n".join(rows)


def test_kstatus_reads_both_kinds_right_in_every_state(states: list[KState]) -> None:
    verdicts = compute([s.obj for s in states])
    print("\n" + table(states, verdicts))
    wrong = {
        s.name: (v, s.expected)
        for s, v in zip(states, verdicts, strict=True)
        if v.get("status") != s.expected
    }
    assert not wrong, wrong
    # The transcription of kstatus's rules the unit tests use agrees with kstatus, message included.
    for state, verdict in zip(states, verdicts, strict=True):
        assert kstatus_rules(state.obj) == (verdict["status"], verdict["message"]), state.name


def test_the_rules_transcription_matches_kstatus_at_its_edges() -> None:
    """What the table of rules claims about kstatus, where the operator's states do not go."""

    def obj(conditions: list[dict[str, str]], **status: Any) -> dict[str, Any]:
        return {
            "apiVersion": "tritonoperator.dev/v1alpha1",
            "kind": "TritonModel",
            "metadata": {"name": "m", "namespace": "default", "generation": 2},
            "status": {"conditions": conditions, **status},
        }

    def cond(type_: str, status: str, message: str = "m") -> dict[str, str]:
        return {"type": type_, "status": status, "reason": "R", "message": message}

    edges = [
        obj([]),  # no observedGeneration, no conditions: Current (a fresh object before any status)
        obj([cond("Ready", "Unknown")], observedGeneration=2),
        obj([cond("Stalled", "True", "s"), cond("Reconciling", "True", "r")], observedGeneration=2),
        obj([cond("Reconciling", "True", "r"), cond("Stalled", "True", "s")], observedGeneration=2),
        obj([cond("Ready", "True"), cond("Stalled", "True", "s")], observedGeneration=2),
        obj([cond("Stalled", "True", "s")], observedGeneration=1),
    ]
    verdicts = compute(edges)
    assert [v["status"] for v in verdicts] == [
        "Current", "InProgress", "Failed", "InProgress", "Failed", "InProgress",
    ]  # fmt: skip
    for edge, verdict in zip(edges, verdicts, strict=True):
        assert kstatus_rules(edge) == (verdict["status"], verdict["message"])
