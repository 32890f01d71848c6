"""PodMonitors against an API server that serves the kind, one that does not, and one that refuses it:
the server's Monitored condition, and one Normal Event only for a missing kind."""

from __future__ import annotations

from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.kube.rest import Kube
from triton_operator.reconcile import optional
from triton_operator.reconcile.monitoring import PodMonitors
from triton_operator.render.podmonitor import PodMonitorDefaults

pytestmark = pytest.mark.unit


class FakeKube:
    def __init__(self, served: list[str] | None, refuse: int | None = None) -> None:
        self.served = served
        self.refuse = refuse
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.discoveries = 0

    def served_resources(self, group_version: str) -> list[str] | None:
        assert group_version == "monitoring.coreos.com/v1"
        self.discoveries += 1
        return self.served

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise ApiException(status=self.refuse, reason="Forbidden")
        self.applied.append(obj)
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        if self.refuse:
            raise ApiException(status=self.refuse, reason="Forbidden")
        self.deleted.append((kind, namespace, name))


def body(conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": "pool", "namespace": "serving", "uid": "uid-1"},
        "spec": {},
        "status": {"conditions": conditions or []},
    }


class Recorder:
    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    def record(self, obj: dict[str, Any], event: Any) -> None:
        assert obj["kind"] == "TritonServer" and obj["metadata"]["name"] == "pool"
        self.posted.append({"type": event.type, "reason": event.reason, "message": event.message})


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    recorder = Recorder()
    monkeypatch.setattr(optional, "recorder_for", lambda kube: recorder)
    return recorder.posted


def monitors(kube: FakeKube, enabled: bool = True) -> PodMonitors:
    return PodMonitors(cast(Kube, kube), PodMonitorDefaults(enabled=enabled))


def test_served_kind_applies_the_pod_monitor(events: list[dict[str, Any]]) -> None:
    kube = FakeKube(["podmonitors", "servicemonitors"])
    pm = monitors(kube)
    pm.apply(body(), TritonServerSpec())
    (applied,) = kube.applied
    assert applied["kind"] == "PodMonitor" and applied["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    condition = pm.condition(("serving", "pool"))
    assert condition is not None and condition.status == "True" and condition.reason == "PodMonitorApplied"
    assert events == []


def test_missing_kind_says_so_once_and_applies_nothing(events: list[dict[str, Any]]) -> None:
    kube = FakeKube(None)
    pm = monitors(kube)
    for _ in range(3):  # the drift period applies again: no second Event
        pm.apply(body(), TritonServerSpec())
    assert kube.applied == []
    condition = pm.condition(("serving", "pool"))
    assert (
        condition is not None and condition.status == "False" and condition.reason == "PodMonitorKindMissing"
    )
    assert "does not serve monitoring.coreos.com/v1 PodMonitor" in condition.message
    assert [(e["type"], e["reason"]) for e in events] == [("Normal", "PodMonitorKindMissing")]
    assert events[0]["message"].startswith("A PodMonitor is wanted")
    assert kube.discoveries == 3  # once per apply, never in a loop of its own


def test_missing_kind_already_in_status_posts_no_event_after_a_restart(events: list[dict[str, Any]]) -> None:
    said = [{"type": "Monitored", "status": "False", "reason": "PodMonitorKindMissing", "message": "..."}]
    monitors(FakeKube(["servicemonitors"])).apply(body(said), TritonServerSpec())
    assert events == []


def test_refused_apply_is_a_condition_not_a_failed_server(events: list[dict[str, Any]]) -> None:
    pm = monitors(FakeKube(["podmonitors"], refuse=403))
    pm.apply(body(), TritonServerSpec())  # no exception: the rest of the server's apply goes on
    condition = pm.condition(("serving", "pool"))
    assert condition is not None and condition.reason == "PodMonitorFailed" and "403" in condition.message


def test_a_refused_delete_is_a_condition_not_a_failed_server(events: list[dict[str, Any]]) -> None:
    # An operator under a previous release's RBAC (no delete on podmonitors): rehearsal 8's chart upgrade.
    pm = monitors(FakeKube(["podmonitors"], refuse=403))
    off = TritonServerSpec.model_validate({"monitoring": {"podMonitor": {"enabled": False}}})
    pm.apply(body(), off)  # no exception: the rest of the server's apply goes on
    condition = pm.condition(("serving", "pool"))
    assert condition is not None and condition.reason == "PodMonitorFailed"
    assert condition.message.startswith("deleting PodMonitor pool failed: 403")


def test_not_wanted_deletes_it_and_drops_the_condition(events: list[dict[str, Any]]) -> None:
    kube = FakeKube(["podmonitors"])
    pm = monitors(kube)
    pm.apply(body(), TritonServerSpec())
    pm.apply(body(), TritonServerSpec.model_validate({"monitoring": {"podMonitor": {"enabled": False}}}))
    assert kube.deleted == [("PodMonitor", "serving", "pool")]
    assert pm.condition(("serving", "pool")) is None
