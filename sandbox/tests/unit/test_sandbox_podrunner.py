"""The sandbox pod runner starts a pod whose IP kwok gave away too early only once the deleted pod that
held it has stopped (its preStop sleep and grace period): two Tritons on one IP crash-looped the new
one, and the old one answered the new pod's probes."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, cast

import pytest

from sandbox import podrunner
from sandbox.attach import VolumeAttachments
from sandbox.podrunner import PodRunner

pytestmark = pytest.mark.unit


class FakeLife:
    """A PodLife whose processes take `stop_s` to stop once asked to."""

    started: ClassVar[list[str]] = []

    def __init__(
        self,
        core: Any,
        pod: dict[str, Any],
        settings: Any,
        pods_dir: Any,
        attachments: Any,
        stop_s: float = 0.3,
    ):
        self.uid, self.pod_ip = pod["metadata"]["uid"], pod["status"]["podIP"]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(stop_s,), daemon=True)

    def _run(self, stop_s: float) -> None:
        self._stop.wait(30)
        time.sleep(stop_s)

    def start(self) -> None:
        FakeLife.started.append(self.uid)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def saw(self, pod: dict[str, Any]) -> None:
        pass


def _runner(monkeypatch: pytest.MonkeyPatch) -> PodRunner:
    monkeypatch.setattr(podrunner, "PodLife", FakeLife)
    FakeLife.started = []
    runner = PodRunner.__new__(PodRunner)
    runner.core, runner.settings = cast(Any, None), cast(Any, None)
    runner.cfg = cast(Any, type("Cfg", (), {"pods_dir": None})())
    runner.lock, runner.stopping = threading.Lock(), threading.Event()
    runner.node_names = {"gpu-0"}
    runner.pods, runner.draining, runner.deferred = {}, {}, {}
    runner.attachments = VolumeAttachments()
    return runner


def _pod(uid: str, ip: str, deleted: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": uid, "name": uid}
    if deleted:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": "gpu-0"}, "status": {"podIP": ip, "phase": "Pending"}}


def _wait(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_new_pod_with_a_deleted_pods_ip_starts_once_the_old_processes_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = _runner(monkeypatch)
    runner.handle("ADDED", _pod("old", "10.244.1.1"))
    old = runner.pods["old"]
    runner.handle("MODIFIED", _pod("old", "10.244.1.1", deleted=True))  # kwok frees the IP at once
    runner.handle("ADDED", _pod("new", "10.244.1.1"))
    assert FakeLife.started == ["old"]  # not while the old processes stop
    assert _wait(lambda: FakeLife.started == ["old", "new"])
    assert not old.thread.is_alive()
    assert runner.draining == {} and runner.deferred == {}


def test_another_ip_starts_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _runner(monkeypatch)
    runner.handle("ADDED", _pod("old", "10.244.1.1"))
    runner.handle("MODIFIED", _pod("old", "10.244.1.1", deleted=True))
    runner.handle("ADDED", _pod("other", "10.244.1.2"))
    assert FakeLife.started == ["old", "other"]


def test_a_deferred_pod_deleted_before_its_turn_never_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _runner(monkeypatch)
    runner.handle("ADDED", _pod("old", "10.244.1.1"))
    old = runner.pods["old"]
    runner.handle("DELETED", _pod("old", "10.244.1.1", deleted=True))
    runner.handle("ADDED", _pod("new", "10.244.1.1"))
    runner.handle("DELETED", _pod("new", "10.244.1.1", deleted=True))
    old.join(5)
    time.sleep(0.2)
    assert FakeLife.started == ["old"]
