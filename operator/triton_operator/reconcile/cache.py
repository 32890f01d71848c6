"""Reads shared by every object's pass: one fetch per key and period, however many objects ask.

A server with 100 models would otherwise be read 100 times a period (its TritonServer, its pod
list, each pod's repository index). Entries live `ttl_s` and are dropped at once by `invalidate`
(watch events, our own loads), so a pass never acts on what an event already said is stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
SWEEP_EVERY = 512  # fetches between sweeps of expired entries
EXPIRED_AFTER_TTLS = 10


@dataclass(frozen=True)
class _Cached(Generic[T]):
    value: T
    fetched_at: float
    epoch: int


class SharedReads(Generic[T]):
    """A single-flight TTL cache: concurrent callers of one key wait for one fetch.

    `invalidate(key)` bumps the key's epoch; a fetch that began before it is returned to its caller
    but not kept, so a read that raced an invalidation can never be served to later callers.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[Hashable, _Cached[T]] = {}
        self._epochs: dict[Hashable, int] = {}
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, key: Hashable, fetch: Callable[[], T], *, fresh: bool = False) -> T:
        """The cached value of `key`, or `fetch()`'s (kept for others); `fresh` always fetches."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                epoch = self._epochs.get(key, 0)
                cached = self._entries.get(key)
                if (
                    not fresh
                    and cached is not None
                    and cached.epoch == epoch
                    and self.clock() - cached.fetched_at < self.ttl_s
                ):
                    return cached.value
            started = self.clock()
            value = fetch()
            with self._lock:
                self.fetches += 1
                if self._epochs.get(key, 0) == epoch:
                    self._entries[key] = _Cached(value, started, epoch)
                if self.fetches % SWEEP_EVERY == 0:
                    self._sweep()
            return value

    def invalidate(self, key: Hashable) -> None:
        with self._lock:
            self._epochs[key] = self._epochs.get(key, 0) + 1
            self._entries.pop(key, None)

    def put(self, key: Hashable, value: T) -> None:
        """Keep a value that is known current now (a watch event's object): reads in flight are dropped."""
        with self._lock:
            epoch = self._epochs[key] = self._epochs.get(key, 0) + 1
            self._entries[key] = _Cached(value, self.clock(), epoch)

    def update(self, key: Hashable, change: Callable[[T], T]) -> None:
        """Apply a watch event to a kept value (it keeps the age of the read it came from); with nothing
        kept there is nothing to change, but reads in flight are dropped all the same."""
        with self._lock:
            epoch = self._epochs[key] = self._epochs.get(key, 0) + 1
            cached = self._entries.get(key)
            if cached is not None:
                self._entries[key] = _Cached(change(cached.value), cached.fetched_at, epoch)

    def _sweep(self) -> None:
        """Drop long-expired entries (deleted pods and servers are never asked for again)."""
        horizon = self.clock() - EXPIRED_AFTER_TTLS * self.ttl_s
        for key in [k for k, c in self._entries.items() if c.fetched_at < horizon]:
            del self._entries[key]
        idle = [k for k, lock in self._key_locks.items() if k not in self._entries and not lock.locked()]
        for key in idle:  # no fetch in flight (it would hold the lock): its epoch can go too
            del self._key_locks[key]
            self._epochs.pop(key, None)
        for key in [k for k in self._epochs if k not in self._entries and k not in self._key_locks]:
            del self._epochs[key]
