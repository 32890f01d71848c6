"""The per-object loops: bounded threads for any number of objects, each object refreshed every period."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from triton_operator.handlers.loops import ObjectLoops, spec_or_commands_changed

pytestmark = pytest.mark.unit
WAIT_S = 10.0


def body(name: str, generation: int = 1, rv: int = 1, **annotations: str) -> dict[str, Any]:
    meta = {"name": name, "generation": generation, "resourceVersion": str(rv), "annotations": annotations}
    return {"metadata": meta}


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Recorder:
    """A refresh that counts passes per object and the most that ran at once."""

    def __init__(self, hold_s: float = 0.0):
        self.hold_s = hold_s
        self.passes: Counter[str] = Counter()
        self.bodies: dict[str, Mapping[str, Any]] = {}
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, body: Mapping[str, Any], should_stop: Callable[[], bool]) -> None:
        name = body["metadata"]["name"]
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.hold_s)
        with self.lock:
            self.running -= 1
            self.passes[name] += 1
            self.bodies[name] = body


@pytest.fixture
def loops() -> Iterator[ObjectLoops]:
    loops = ObjectLoops(workers=4, name="test")
    yield loops
    loops.stop(wait=True)


def test_a_thousand_objects_are_all_refreshed_every_period_on_bounded_threads(loops: ObjectLoops) -> None:
    recorder = Recorder(hold_s=0.001)
    loops.register("Model", recorder, period_s=0.5)
    before = threading.active_count()
    for i in range(1000):
        loops.track("Model", i, body(f"m{i}"))
    wait_until(lambda: len(recorder.passes) == 1000, "a first pass of every object")
    wait_until(lambda: min(recorder.passes.values()) >= 3, "three passes of every object")
    assert threading.active_count() - before <= 4 + 1  # the pool and the scheduler, whatever the count
    assert recorder.most_at_once <= 4


def test_an_object_stuck_in_its_pass_does_not_hold_up_the_others(loops: ObjectLoops) -> None:
    release = threading.Event()
    passes: Counter[str] = Counter()

    def refresh(b: Mapping[str, Any], should_stop: Callable[[], bool]) -> None:
        name = b["metadata"]["name"]
        passes[name] += 1
        if name == "stuck":
            release.wait(WAIT_S)

    loops.register("Model", refresh, period_s=0.05)
    loops.track("Model", "stuck", body("stuck"))
    for i in range(20):
        loops.track("Model", i, body(f"m{i}"))
    wait_until(lambda: all(passes[f"m{i}"] >= 5 for i in range(20)), "the others' passes")
    assert passes["stuck"] == 1  # one pass at a time per object: it never ran twice at once
    release.set()
    wait_until(lambda: passes["stuck"] >= 2, "the stuck object's next pass")


def test_a_poke_during_a_pass_runs_exactly_one_more_pass_right_after(loops: ObjectLoops) -> None:
    started, release = threading.Event(), threading.Event()
    passes: list[float] = []

    def refresh(b: Mapping[str, Any], should_stop: Callable[[], bool]) -> None:
        passes.append(time.monotonic())
        if len(passes) == 1:
            started.set()
            release.wait(WAIT_S)

    loops.register("Model", refresh, period_s=60)
    loops.track("Model", "a", body("a"))
    assert started.wait(WAIT_S)
    for _ in range(5):
        loops.poke("Model", "a")
    release.set()
    wait_until(lambda: len(passes) == 2, "the pass after the pokes")
    time.sleep(0.3)
    assert len(passes) == 2, "five pokes during one pass ask for one more pass, not five"


def test_new_spec_or_annotations_get_a_pass_at_once_status_news_do_not(loops: ObjectLoops) -> None:
    recorder = Recorder()
    loops.register("Model", recorder, period_s=60)
    assert loops.track("Model", "a", body("a", generation=1, rv=1))
    wait_until(lambda: recorder.passes["a"] == 1, "the first pass")
    assert not loops.track("Model", "a", body("a", generation=1, rv=2))  # a status write
    time.sleep(0.2)
    assert recorder.passes["a"] == 1
    assert loops.track("Model", "a", body("a", generation=2, rv=3))
    wait_until(lambda: recorder.passes["a"] == 2, "the pass for the new spec")
    assert recorder.bodies["a"]["metadata"]["generation"] == 2
    assert loops.track("Model", "a", body("a", generation=2, rv=4, command="promote"))
    wait_until(lambda: recorder.passes["a"] == 3, "the pass for the new annotation")


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        (body("a", 1), body("a", 1, rv=2), False),
        (body("a", 1), body("a", 2), True),
        (body("a", 1), body("a", 1, action="abort"), True),
        (body("a", 1, action="abort"), body("a", 1, action="abort"), False),
    ],
)
def test_what_asks_for_a_pass_now(old: dict[str, Any], new: dict[str, Any], changed: bool) -> None:
    assert spec_or_commands_changed(old, new) is changed


def test_the_next_pass_sees_what_the_last_one_wrote_not_an_older_event(loops: ObjectLoops) -> None:
    seen: list[str] = []

    def refresh(b: Mapping[str, Any], should_stop: Callable[[], bool]) -> Mapping[str, Any]:
        seen.append(b["metadata"]["resourceVersion"])
        return body("a", rv=int(b["metadata"]["resourceVersion"]) + 10)  # what our status patch returned

    loops.register("Model", refresh, period_s=0.1)
    loops.track("Model", "a", body("a", rv=1))
    wait_until(lambda: len(seen) >= 1, "the first pass")
    loops.track("Model", "a", body("a", rv=2))  # the watch event of a state before our write: dropped
    wait_until(lambda: len(seen) >= 3, "two more passes")
    assert seen[:3] == ["1", "11", "21"]


def test_forgetting_ends_the_loop_and_tells_a_running_pass(loops: ObjectLoops) -> None:
    started, release = threading.Event(), threading.Event()
    stop_seen: list[bool] = []
    passes = Counter[str]()

    def refresh(b: Mapping[str, Any], should_stop: Callable[[], bool]) -> None:
        passes["a"] += 1
        started.set()
        release.wait(WAIT_S)
        stop_seen.append(should_stop())

    loops.register("Model", refresh, period_s=0.05)
    loops.track("Model", "a", body("a"))
    assert started.wait(WAIT_S)
    loops.forget("Model", "a")
    release.set()
    wait_until(lambda: stop_seen == [True], "the pass to see it was forgotten")
    time.sleep(0.3)
    assert passes["a"] == 1
    assert loops.tracked("Model") == []


def test_a_failing_pass_is_retried_next_period(loops: ObjectLoops) -> None:
    calls: list[int] = []

    def refresh(b: Mapping[str, Any], should_stop: Callable[[], bool]) -> None:
        calls.append(1)
        raise RuntimeError("the apiserver is down")

    loops.register("Model", refresh, period_s=0.05)
    loops.track("Model", "a", body("a"))
    wait_until(lambda: len(calls) >= 3, "retries after failures")


def test_kinds_are_separate_loops_even_for_one_name(loops: ObjectLoops) -> None:
    servers, models = Recorder(), Recorder()
    loops.register("Server", servers, period_s=60)
    loops.register("Model", models, period_s=60)
    loops.track("Server", ("ns", "x"), body("x"))
    loops.track("Model", ("ns", "x"), body("x"))
    wait_until(lambda: servers.passes["x"] == 1 and models.passes["x"] == 1, "a pass of each")
    loops.poke("Model", ("ns", "x"))
    wait_until(lambda: models.passes["x"] == 2, "the poked model's pass")
    time.sleep(0.2)
    assert servers.passes["x"] == 1
