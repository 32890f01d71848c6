"""The event recorder (kube/events.py): Events from triton-operator, identical ones counted on one object as
client-go's recorder does, a namespace being deleted said once at DEBUG, never an exception to its caller."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException
from triton_operator.kube.events import NORMAL, WARNING, Event, EventRecorder, recorder_for
from triton_operator.kube.rest import Kube

T0 = dt.datetime(2026, 12, 7, 15, 0, 0, tzinfo=dt.UTC)
MODEL: dict[str, Any] = {
    "apiVersion": "tritonoperator.dev/v1alpha1",
    "kind": "TritonModel",
    "metadata": {"namespace": "ns", "name": "mnist", "uid": "u-1", "resourceVersion": "7"},
}
TERMINATING = (
    '{"message": "events is forbidden: unable to create new content in namespace ns because it is being '
    'terminated"}'
)


def refusal(status: int, body: str = "") -> ApiException:
    exc = ApiException(status=status, reason={403: "Forbidden", 404: "Not Found", 500: "Internal"}[status])
    exc.body = body
    return exc


class FakeEvents:
    """The events API as the apiserver answers: create keeps the object, a merge patch updates it."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.refuse: ApiException | None = None

    def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        if self.refuse is not None:
            raise self.refuse
        assert kind == "Event" and namespace == obj["metadata"]["namespace"]
        self.objects[obj["metadata"]["name"]] = dict(obj)
        return obj

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("patch")
        if self.refuse is not None:
            raise self.refuse
        if name not in self.objects:
            raise refusal(404)
        self.objects[name].update(patch)
        return self.objects[name]


def recorder(fake: FakeEvents, clock: list[dt.datetime]) -> EventRecorder:
    return EventRecorder(
        cast(Kube, fake), instance="triton-operator-5475d496c7-klj77", clock=lambda: clock[0]
    )


def test_an_event_names_the_operator_its_pod_and_the_object() -> None:
    fake = FakeEvents()
    recorder(fake, [T0]).record(MODEL, Event(NORMAL, "Loaded", "Version 1 is ready on 2/2 replicas."))
    (posted,) = fake.objects.values()
    assert posted["source"] == {"component": "triton-operator"}
    assert posted["reportingComponent"] == "triton-operator"
    assert posted["reportingInstance"] == "triton-operator-5475d496c7-klj77"
    assert posted["involvedObject"] == {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "namespace": "ns",
        "name": "mnist",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (posted["type"], posted["reason"], posted["count"]) == ("Normal", "Loaded", 1)
    assert posted["firstTimestamp"] == posted["lastTimestamp"] == "2026-12-07T15:00:00Z"
    assert posted["metadata"]["name"].startswith("mnist.")


def test_identical_events_are_one_object_with_a_count() -> None:
    fake, clock = FakeEvents(), [T0]
    rec = recorder(fake, clock)
    warning = Event(WARNING, "ReplicasNotReady", "1 of 2 replicas ready (not ready: triton-a)")
    rec.record(MODEL, warning)
    clock[0] = T0 + dt.timedelta(seconds=1)
    rec.record(MODEL, warning)
    clock[0] = T0 + dt.timedelta(seconds=30)
    rec.record(MODEL, warning)
    assert fake.calls == ["create", "patch", "patch"]
    (posted,) = fake.objects.values()
    assert posted["count"] == 3
    assert (posted["firstTimestamp"], posted["lastTimestamp"]) == (
        "2026-12-07T15:00:00Z",
        "2026-12-07T15:00:30Z",
    )
    # Another message, type or object is another Event.
    rec.record(MODEL, Event(WARNING, "ReplicasNotReady", "1 of 2 replicas ready (not ready: triton-b)"))
    rec.record({**MODEL, "metadata": {**MODEL["metadata"], "name": "other", "uid": "u-2"}}, warning)
    assert len(fake.objects) == 3


def test_a_repeat_of_an_expired_event_posts_it_anew() -> None:
    fake = FakeEvents()
    rec = recorder(fake, [T0])
    rec.record(MODEL, Event(NORMAL, "Loaded", "Version 1 is ready on 2/2 replicas."))
    fake.objects.clear()  # the apiserver's TTL (1 h) removed it
    rec.record(MODEL, Event(NORMAL, "Loaded", "Version 1 is ready on 2/2 replicas."))
    assert fake.calls == ["create", "patch", "create"]
    assert [o["count"] for o in fake.objects.values()] == [1]


def test_an_event_into_a_namespace_being_deleted_is_dropped_and_said_once_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEvents()
    rec = recorder(fake, [T0])
    fake.refuse = refusal(403, TERMINATING)
    with caplog.at_level(logging.DEBUG, logger="triton_operator.kube.events"):
        for reason in ("Staging", "Staged", "Loaded"):
            rec.record(MODEL, Event(NORMAL, reason, "x"))  # no exception, no retry
        fake.refuse = refusal(404, '{"message": "namespaces \\"ns\\" not found"}')
        rec.record(MODEL, Event(NORMAL, "Loaded", "y"))
    assert fake.calls == ["create"] * 4
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "TritonModel ns/mnist" in caplog.records[0].getMessage()


def test_any_other_failure_is_one_warning_naming_the_object_never_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeEvents()
    fake.refuse = refusal(500)
    with caplog.at_level(logging.DEBUG, logger="triton_operator.kube.events"):
        recorder(fake, [T0]).record(MODEL, Event(WARNING, "LoadFailed", "Triton: bad config"))
    (line,) = caplog.records
    assert line.levelno == logging.WARNING
    assert "TritonModel ns/mnist" in line.getMessage() and "LoadFailed" in line.getMessage()


def test_an_events_type_is_normal_or_warning() -> None:
    with pytest.raises(ValueError, match="Normal or Warning"):
        Event("Error", "X", "y")


def test_one_recorder_per_client_so_repeats_aggregate_across_passes() -> None:
    fake = FakeEvents()
    assert recorder_for(cast(Kube, fake)) is recorder_for(cast(Kube, fake))
