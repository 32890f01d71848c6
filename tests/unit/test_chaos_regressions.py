"""Regressions found by `make chaos` (tests/chaos), each named after the fault that found it."""

from __future__ import annotations

from typing import Any, cast

import pytest
from triton_operator.kube.rest import Kube
from triton_operator.observe.staging import StagedRecord, recorded_staging
from triton_operator.reconcile.loading import Loader
from triton_operator.reconcile.state import ModelMemory, OperatorState
from triton_operator.triton.client import ModelState

pytestmark = pytest.mark.unit

TARGET = "adder-versions"
STAGED = StagedRecord("adder-stage-2", 2, "sha256:x")


def _pod(uid: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"triton-{uid}", "uid": uid, "namespace": "ns"},
        "status": {"podIP": "10.244.1.9", "conditions": [{"type": "ContainersReady", "status": "True"}]},
    }


class Indexes(Loader):
    """The loader with each pod's repository index given (no Triton, no cluster)."""

    def __init__(self, index: dict[str, list[ModelState]]):
        super().__init__(kube=cast(Kube, None), state=OperatorState())
        self.index = index

    def read_index(self, pod: Any) -> list[ModelState]:
        return self.index[pod["metadata"]["uid"]]


def _row(version: str) -> ModelState:
    return ModelState(TARGET, version, "READY", None)


def test_operator_sigkill_right_after_a_promotion_does_not_leave_the_old_version_loaded() -> None:
    """Chaos seed 12345, kill 11: the promotion's pass removed version 1's files and wrote status (version
    2 serves everything); the operator was killed before the next pass reloaded the model, and its
    successor saw nothing to retire in status, so version 1 stayed loaded on every pod for good."""
    reconciler = Indexes({"a": [_row("1"), _row("2")], "b": [_row("2")]})
    memory = ModelMemory(staged=STAGED, loads={"a": STAGED.job, "b": STAGED.job})
    reconciler.reload_stale_versions([_pod("a"), _pod("b")], TARGET, "2", memory)
    assert memory.loads == {"a": "", "b": STAGED.job}  # pod a reloads from disk on the next pass

    # Asked once per pod and staging: files still on disk would keep it, and reloading every pass
    # would not remove them.
    memory.loads["a"] = STAGED.job
    on_disk = reconciler.reload_stale_versions([_pod("a"), _pod("b")], TARGET, "2", memory)
    assert memory.loads == {"a": STAGED.job, "b": STAGED.job}
    assert on_disk == {"1"}  # reloaded and still there: its files are on disk


def test_versions_left_in_a_retained_repository_are_reported_once_a_reload_kept_them() -> None:
    """CI rehearsal, chaos seed 1057707514 kill 3: a model deleted with its server gone left versions 1
    and 2 in the retained repository; a new model staged version 1 into it and both stayed READY on
    every pod (Triton serves what is on disk). The versions a reload keeps are what the pass retires."""
    reconciler = Indexes({"a": [_row("1"), _row("2")]})
    memory = ModelMemory(staged=STAGED, loads={"a": STAGED.job})
    assert reconciler.reload_stale_versions([_pod("a")], TARGET, "1", memory) == set()  # reload first
    assert memory.loads == {"a": ""}
    memory.loads["a"] = STAGED.job  # the next pass reloaded it
    assert reconciler.reload_stale_versions([_pod("a")], TARGET, "1", memory) == {"2"}


def test_operator_restarted_mid_canary_remembers_the_staged_version_not_the_served_one() -> None:
    """Chaos seed 49025936, kill 2: etcd's pause made the operator lose its lease mid-canary and restart;
    it rebuilt the staged record from status with servedVersion (1, the stable) for version 2's Job, so
    after the promotion removed version 1 every new pod failed its load check ("loaded, but version 1 is
    not ready"), opened its gate without the model, and the server's roll never converged."""
    status = {"stagingJob": "scorer-stage-v2", "stagedDigest": "sha256:x", "servedVersion": 1}
    staged = recorded_staging(status, "scorer-stage-v2", 2)
    assert staged == StagedRecord("scorer-stage-v2", 2, "sha256:x")
    # A Job of an earlier spec: what serves is all status knows of it.
    assert recorded_staging(status, "scorer-stage-v3", 3) == StagedRecord("scorer-stage-v2", 1, "sha256:x")
    assert recorded_staging({**status, "servedVersion": None}, "scorer-stage-v3", 3) is None
