"""The pod runner sends a pod's status as a kubelet's status manager does: a status the apiserver did not
take (it was restarting) is sent again, and a finished pod's last status is sent until it is taken."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import urllib3

from sandbox.attach import VolumeAttachments
from sandbox.podlife import PodLife, RuntimeSettings

POD: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "job-pod", "uid": "u-1"},
    "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]},
    "status": {"podIP": "10.244.0.9"},
}
SETTINGS = RuntimeSettings("", "", "", "", "10.96.0.1", 443, {}, "")


class AwayThenBackCore:
    """A CoreV1Api whose apiserver refuses connections for the first `away` status patches."""

    def __init__(self, away: int):
        self.away = away
        self.sent: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        with self.lock:
            if self.away > 0:
                self.away -= 1
                raise urllib3.exceptions.MaxRetryError(None, "/status", OSError("Connection refused"))
            self.sent.append(body["status"])

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/events", OSError("Connection refused"))


def life(core: AwayThenBackCore, tmp_path: Path) -> PodLife:
    return PodLife(core, POD, SETTINGS, tmp_path, VolumeAttachments())


def test_a_status_the_apiserver_did_not_take_is_sent_again(tmp_path: Path) -> None:
    core = AwayThenBackCore(away=1)
    pod = life(core, tmp_path)
    pod.phase = "Succeeded"
    pod._publish()  # the apiserver is away: nothing sent, and no exception ends the pod's thread
    assert core.sent == []
    pod._publish()
    assert [s["phase"] for s in core.sent] == ["Succeeded"]
    pod._publish()  # taken: the same status is not sent twice
    assert len(core.sent) == 1


def test_a_finished_pods_last_status_is_sent_until_taken(tmp_path: Path, monkeypatch: Any) -> None:
    core = AwayThenBackCore(away=2)
    pod = life(core, tmp_path)

    def finish() -> bool:  # the pod's containers ran and ended while the apiserver was away
        pod.phase = "Succeeded"
        pod._publish()
        return False

    monkeypatch.setattr(pod, "_prepare", finish)
    pod.thread.start()
    deadline = time.monotonic() + 10
    while not core.sent and time.monotonic() < deadline:
        time.sleep(0.1)
    pod.stop_event.set()
    pod.thread.join(timeout=10)
    assert [s["phase"] for s in core.sent] == ["Succeeded"]
    assert not pod.thread.is_alive()


def test_a_container_that_exits_while_the_apiserver_is_away_is_restarted(tmp_path: Path) -> None:
    # Its BackOff Event cannot be sent: dropped, as a kubelet's recorder does, and the restart still comes.
    pod = PodLife(
        AwayThenBackCore(away=0),
        {**POD, "spec": {"restartPolicy": "Always", "containers": [{"name": "main", "image": "pause"}]}},
        SETTINGS,
        tmp_path,
        VolumeAttachments(),
    )
    run = pod.runs[0]
    pod._record_exit(run, 2)  # raised before: the pod's thread ended here
    pod._schedule_restart(run)
    assert run.restart_at is not None
    assert run.state["waiting"]["reason"] == "CrashLoopBackOff"
