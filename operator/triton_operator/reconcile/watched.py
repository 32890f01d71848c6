"""Staging Jobs and their pods as the watch last showed them, so waiting on staging costs no reads.

kopf watches both kinds already (to wake a model when its Job changes); every event lands here. A
model's pass reads from here and asks the API only for what no event has shown yet (after a restart,
before the watch has listed it). Entries older than `max_age_s` are read again: a watch that broke
and re-listed never reports what was deleted in between, so nothing stale outlives that bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from triton_operator.render.labels import JOB_NAME_LABEL

Key = tuple[str, str]  # (namespace, name)
Obj = dict[str, Any]
MAX_AGE_S = 300.0  # kopf's watch timeout: every watch re-lists at least this often


@dataclass
class _Seen:
    value: Any
    at: float
    epoch: int


@dataclass
class WatchedStaging:
    max_age_s: float = MAX_AGE_S
    clock: Callable[[], float] = time.monotonic
    # (namespace, job name) -> the Job, or None once deleted.
    _jobs: dict[Key, _Seen] = field(default_factory=dict)
    # (namespace, job name) -> {pod name: pod}; present once listed or fully seen.
    _pods: dict[Key, _Seen] = field(default_factory=dict)
    _epochs: dict[Key, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- fed by watch events --------------------------------------------------------------------------
    def saw_job(self, event_type: str | None, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            self._bump(key)
            value = None if event_type == "DELETED" else dict(job)
            self._jobs[key] = _Seen(value, self.clock(), self._epochs[key])

    def saw_pod(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        job = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        if not job:
            return
        key = (meta["namespace"], job)
        with self._lock:
            self._bump(key)
            seen = self._pods.get(key)
            if seen is None:
                return  # never listed: the next read lists them all
            pods = dict(seen.value)
            if event_type == "DELETED":
                pods.pop(meta["name"], None)
            else:
                pods[meta["name"]] = dict(pod)
            self._pods[key] = _Seen(pods, seen.at, self._epochs[key])

    def deleted_job(self, namespace: str, name: str) -> None:
        """The operator deleted it itself: known gone without waiting for the event."""
        with self._lock:
            key = (namespace, name)
            self._bump(key)
            self._jobs[key] = _Seen(None, self.clock(), self._epochs[key])

    # -- read by passes -------------------------------------------------------------------------------
    def job(self, namespace: str, name: str, read: Callable[[], Obj | None]) -> Obj | None:
        value: Obj | None = self._read(self._jobs, (namespace, name), read)
        return value

    def pods(self, namespace: str, job: str, read: Callable[[], list[Obj]]) -> list[Obj]:
        def listed() -> dict[str, Obj]:
            return {p["metadata"]["name"]: p for p in read()}

        pods: dict[str, Obj] = self._read(self._pods, (namespace, job), listed)
        return list(pods.values())

    def _read(self, store: dict[Key, _Seen], key: Key, read: Callable[[], Any]) -> Any:
        with self._lock:
            seen = store.get(key)
            if seen is not None and self.clock() - seen.at < self.max_age_s:
                return seen.value
            epoch = self._epochs.get(key, 0)
        started = self.clock()
        value = read()
        with self._lock:
            if self._epochs.get(key, 0) == epoch:  # no event since the read began: it is current
                store[key] = _Seen(value, started, epoch)
            self._sweep()
        return value

    def _bump(self, key: Key) -> None:
        self._epochs[key] = self._epochs.get(key, 0) + 1

    def _sweep(self) -> None:
        """Forget entries nobody read for long (staging Jobs of the past)."""
        horizon = self.clock() - 2 * self.max_age_s
        for store in (self._jobs, self._pods):
            for key in [k for k, seen in store.items() if seen.at < horizon]:
                del store[key]
        for key in [k for k in self._epochs if k not in self._jobs and k not in self._pods]:
            del self._epochs[key]
