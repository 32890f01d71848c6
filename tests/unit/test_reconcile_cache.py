"""Shared reads: one fetch per key and period for any number of callers; invalidation wins races."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from triton_operator.reconcile.cache import SharedReads

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_callers_of_one_key_share_one_fetch() -> None:
    cache: SharedReads[int] = SharedReads(ttl_s=60)
    fetches: list[int] = []

    def fetch() -> int:
        fetches.append(1)
        time.sleep(0.05)
        return 7

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: cache.get("pods", fetch), range(64)))
    assert results == [7] * 64
    assert len(fetches) == 1


def test_a_value_lives_for_the_ttl_then_is_fetched_again() -> None:
    clock = FakeClock()
    cache: SharedReads[int] = SharedReads(ttl_s=10, clock=clock)
    values = iter(range(100))
    assert cache.get("k", lambda: next(values)) == 0
    clock.now += 9.9
    assert cache.get("k", lambda: next(values)) == 0
    clock.now += 0.2
    assert cache.get("k", lambda: next(values)) == 1
    assert cache.get("k", lambda: next(values), fresh=True) == 2
    assert cache.get("k", lambda: next(values)) == 2  # a fresh read is kept for the others


def test_invalidate_drops_the_value_and_a_read_that_raced_it() -> None:
    cache: SharedReads[str] = SharedReads(ttl_s=60)
    assert cache.get("k", lambda: "old") == "old"
    cache.invalidate("k")
    in_fetch, proceed = threading.Event(), threading.Event()

    def slow_fetch() -> str:
        in_fetch.set()
        proceed.wait(5)
        return "read before the event"

    racer = threading.Thread(target=lambda: cache.get("k", slow_fetch))
    racer.start()
    assert in_fetch.wait(5)
    cache.invalidate("k")  # an event said it changed while the read was in flight
    proceed.set()
    racer.join(5)
    assert cache.get("k", lambda: "read after the event") == "read after the event"


def test_put_replaces_the_value_and_beats_reads_in_flight() -> None:
    cache: SharedReads[str] = SharedReads(ttl_s=60)
    cache.put("server", "from the watch event")
    assert cache.get("server", lambda: "a GET") == "from the watch event"


def test_expired_entries_are_swept() -> None:
    clock = FakeClock()
    cache: SharedReads[int] = SharedReads(ttl_s=1, clock=clock)
    for i in range(600):
        cache.get(("pod", i), lambda: 1)
        clock.now += 0.1
    assert len(cache._entries) < 600
