"""Staging Jobs and pods as the watch showed them: reads only for what no event has shown yet."""

from __future__ import annotations

from typing import Any

import pytest
from triton_operator.reconcile.watched import WatchedStaging

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(name: str, state: str = "running") -> dict[str, Any]:
    return {"kind": "Job", "metadata": {"namespace": "ml", "name": name}, "status": {"state": state}}


def pod(name: str, job_name: str, phase: str = "Running") -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-name": job_name}
    return {
        "kind": "Pod",
        "metadata": {"namespace": "ml", "name": name, "labels": labels},
        "status": {"phase": phase},
    }


def never() -> Any:
    raise AssertionError("read the API although the watch had shown it")


def test_a_job_seen_by_the_watch_is_not_read_again_until_it_is_old() -> None:
    clock = Clock()
    watched = WatchedStaging(max_age_s=300, clock=clock)
    watched.saw_job("ADDED", job("j1"))
    assert watched.job("ml", "j1", never) == job("j1")
    watched.saw_job("MODIFIED", job("j1", "complete"))
    assert watched.job("ml", "j1", never)["status"]["state"] == "complete"
    clock.now += 301  # a watch may have missed a deletion since: read it again
    assert watched.job("ml", "j1", lambda: None) is None


def test_a_job_never_seen_is_read_once_and_a_deleted_one_is_known_gone() -> None:
    watched = WatchedStaging()
    reads: list[str] = []

    def get() -> None:
        reads.append("get")

    assert watched.job("ml", "j2", get) is None
    assert watched.job("ml", "j2", never) is None
    assert reads == ["get"]
    watched.saw_job("ADDED", job("j3"))
    watched.deleted_job("ml", "j3")
    assert watched.job("ml", "j3", never) is None


def test_pods_are_listed_once_then_kept_current_by_events() -> None:
    watched = WatchedStaging()
    assert [p["metadata"]["name"] for p in watched.pods("ml", "j1", lambda: [pod("a", "j1")])] == ["a"]
    watched.saw_pod("ADDED", pod("b", "j1"))
    watched.saw_pod("MODIFIED", pod("a", "j1", "Succeeded"))
    watched.saw_pod("ADDED", pod("other", "j2"))  # another Job's
    seen = {p["metadata"]["name"]: p["status"]["phase"] for p in watched.pods("ml", "j1", never)}
    assert seen == {"a": "Succeeded", "b": "Running"}
    watched.saw_pod("DELETED", pod("a", "j1"))
    assert [p["metadata"]["name"] for p in watched.pods("ml", "j1", never)] == ["b"]


def test_a_read_that_raced_an_event_is_not_kept() -> None:
    watched = WatchedStaging()

    def racing_read() -> dict[str, Any]:
        watched.saw_job("MODIFIED", job("j1", "complete"))  # the event lands while the GET is in flight
        return job("j1", "running")

    assert watched.job("ml", "j1", racing_read)["status"]["state"] == "running"  # what the caller read
    assert watched.job("ml", "j1", never)["status"]["state"] == "complete"  # what is kept: the event's


def test_a_pod_listing_that_raced_a_pod_event_is_not_kept() -> None:
    watched = WatchedStaging()
    reads: list[str] = []

    def racing_list() -> list[dict[str, Any]]:
        reads.append("list")
        watched.saw_pod("ADDED", pod("b", "j1"))  # lands while the LIST is in flight
        return [pod("a", "j1")]

    assert [p["metadata"]["name"] for p in watched.pods("ml", "j1", racing_list)] == ["a"]
    listed_again = [
        p["metadata"]["name"] for p in watched.pods("ml", "j1", lambda: [pod("a", "j1"), pod("b", "j1")])
    ]
    assert (listed_again, reads) == (["a", "b"], ["list"])
